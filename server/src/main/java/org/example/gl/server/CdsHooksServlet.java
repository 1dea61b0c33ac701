package org.example.gl.server;

import ca.uhn.fhir.rest.server.exceptions.BaseServerResponseException;
import ca.uhn.hapi.fhir.cdshooks.api.ICdsServiceRegistry;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import ca.uhn.hapi.fhir.cdshooks.api.json.CdsServiceJson;
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.net.URI;
import java.time.Duration;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.stream.Collectors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * CDS Hooks HTTP binding: {@code GET /cds-services} (discovery) and {@code POST /cds-services/{id}} (call).
 * HAPI's cds-hooks module provides the registry but no servlet for a plain JPA server, so this is it.
 * Errors are returned as JSON {@code {"error": ...}} with the HAPI status code (400 unknown service, bad request).
 *
 * <p>Prefetch ({@link PrefetchResolver}): keys the client left out, sent as null or as an OperationOutcome are read
 * from the request's {@code fhirServer} with its {@code fhirAuthorization}; without a {@code fhirServer} the call
 * answers 412; a failing EHR server answers 502/504. When {@code fhirServer} is this server itself, every key is an
 * empty Bundle and the engine reads the stored data: CR (4.4.0) evaluates with the prefetch as extra data <em>and</em>
 * the server's data, so a resource in both would be seen twice ("Expected a list with at most one element" for the
 * Patient) and a card would silently disappear. Discovery publishes the Patient template as a read
 * ({@code Patient/{{context.patientId}}}), not CR's {@code Patient?_id=...} search.
 */
public class CdsHooksServlet extends HttpServlet {
	private static final Logger ourLog = LoggerFactory.getLogger(CdsHooksServlet.class);

	private final transient ICdsServiceRegistry registry;
	private final transient ObjectMapper mapper;
	private final transient PrefetchResolver prefetch;
	private final String pathwayId;
	private static final int MAX_SUMMARY = 140;

	public CdsHooksServlet(ICdsServiceRegistry registry, ObjectMapper mapper, Duration fhirServerBudget, String pathwayId) {
		this.registry = registry;
		this.mapper = mapper;
		this.prefetch = new PrefetchResolver(mapper, fhirServerBudget);
		this.pathwayId = pathwayId;
	}

	/** The per-recommendation patient-view services the pathway service runs, ordered by id (GLR1 ... GLR6). */
	private List<CdsServiceJson> recommendationServices() {
		List<CdsServiceJson> all = registry.getCdsServicesJson().getServices();
		return (all == null ? List.<CdsServiceJson>of() : all).stream()
				.filter(s -> "patient-view".equals(s.getHook()) && !pathwayId.equals(s.getId()))
				.sorted(Comparator.comparing(CdsServiceJson::getId))
				.toList();
	}

	/** One prefetch key per distinct template of the recommendation services (item1, item2, ... in first-seen order). */
	private static Map<String, String> unionTemplates(List<CdsServiceJson> services) {
		Map<String, String> byTemplate = new LinkedHashMap<>();
		for (CdsServiceJson s : services) {
			PrefetchResolver.templates(s.getPrefetch()).values()
					.forEach(t -> byTemplate.computeIfAbsent(t, x -> "item" + (byTemplate.size() + 1)));
		}
		Map<String, String> out = new LinkedHashMap<>();
		byTemplate.forEach((t, k) -> out.put(k, t));
		return out;
	}

	private ObjectNode pathwayDiscovery(List<CdsServiceJson> services) {
		ObjectNode s = mapper.createObjectNode();
		s.put("hook", "patient-view");
		s.put("id", pathwayId);
		s.put("title", "Generalized lipodystrophy: all recommendations");
		s.put("description", "Cards of every applicable recommendation of the pathway in one call, in recommendation order ("
				+ services.stream().map(CdsServiceJson::getId).collect(Collectors.joining(", ")) + ")");
		ObjectNode prefetchNode = s.putObject("prefetch");
		unionTemplates(services).forEach(prefetchNode::put);
		return s;
	}

	/** Resolves the union prefetch once, then runs each recommendation service with its own keys; cards in order. */
	private ObjectNode callPathway(ObjectNode request, boolean dataHere) {
		List<CdsServiceJson> services = recommendationServices();
		Map<String, String> union = unionTemplates(services);
		prefetch.resolve(request, union, dataHere);
		Map<String, JsonNode> byTemplate = new HashMap<>();
		union.forEach((k, t) -> byTemplate.put(t, request.get("prefetch").get(k)));
		ObjectNode out = mapper.createObjectNode();
		ArrayNode cards = out.putArray("cards");
		for (CdsServiceJson service : services) {
			ObjectNode one = request.deepCopy();
			ObjectNode own = one.putObject("prefetch");
			PrefetchResolver.templates(service.getPrefetch()).forEach((k, t) -> own.set(k, byTemplate.get(t)));
			JsonNode answer = mapper.valueToTree(registry.callService(service.getId(), one));
			answer.path("cards").forEach(cards::add);
		}
		return out;
	}

	/**
	 * CDS Hooks 2.0 card requirements CR (4.4.0) does not meet: a {@code uuid} on every card (feedback refers to
	 * it) and a {@code summary} under 140 characters (longer ones are cut at a word and end with an ellipsis).
	 */
	private ObjectNode finishCards(Object response) {
		ObjectNode out = mapper.valueToTree(response);
		if (!out.has("cards")) {
			out.putArray("cards"); // the encoder drops an empty list; a response must still say "cards": []
		}
		for (JsonNode card : out.get("cards")) {
			if (card instanceof ObjectNode c) {
				if (!c.hasNonNull("uuid")) {
					c.put("uuid", UUID.randomUUID().toString());
				}
				String summary = c.path("summary").asText("");
				if (summary.length() >= MAX_SUMMARY) {
					String cut = summary.substring(0, MAX_SUMMARY - 2);
					int space = cut.lastIndexOf(' ');
					c.put("summary", (space > 80 ? cut.substring(0, space) : cut) + "\u2026");
				}
			}
		}
		return out;
	}

	@Override
	protected void doGet(HttpServletRequest req, HttpServletResponse resp) throws IOException {
		if (serviceId(req) != null) {
			write(resp, 404, Map.of("error", "GET is only supported on /cds-services"));
			return;
		}
		ObjectNode body = mapper.valueToTree(registry.getCdsServicesJson());
		if (!body.has("services")) {
			body.putArray("services"); // the encoder drops an empty list; discovery must still say "services": []
		}
		for (JsonNode service : body.get("services")) {
			if (service.get("prefetch") instanceof ObjectNode templates) {
				templates.properties().forEach(e -> e.setValue(
						mapper.getNodeFactory().textNode(PrefetchResolver.normalizeTemplate(e.getValue().asText()))));
			}
		}
		List<CdsServiceJson> recommendations = recommendationServices();
		if (!recommendations.isEmpty()) {
			((ArrayNode) body.get("services")).insert(0, pathwayDiscovery(recommendations));
		}
		write(resp, 200, body);
	}

	@Override
	protected void doPost(HttpServletRequest req, HttpServletResponse resp) throws IOException {
		String id = serviceId(req);
		if (id == null) {
			write(resp, 404, Map.of("error", "POST to /cds-services/{id}"));
			return;
		}
		CdsServiceJson service = null;
		boolean pathway = id.equals(pathwayId) && !recommendationServices().isEmpty();
		try {
			service = pathway ? null : registry.getCdsServiceJson(id);
		} catch (IllegalArgumentException e) { // HAPI-2536 unknown id (or PlanDefinition not registered yet)
			write(resp, 404, Map.of("error", "No CDS service '" + id + "' is registered"));
			return;
		}
		try {
			JsonNode request = mapper.readTree(req.getInputStream());
			if (!(request instanceof ObjectNode object)) {
				write(resp, 400, Map.of("error", "the request body must be a JSON object (CDS Hooks request)"));
				return;
			}
			boolean dataHere = pointsHere(req, object.get("fhirServer"));
			if (pathway) {
				write(resp, 200, finishCards(callPathway(object, dataHere)));
				return;
			}
			prefetch.resolve(object, PrefetchResolver.templates(service.getPrefetch()), dataHere);
			write(resp, 200, finishCards(registry.callService(id, request)));
		} catch (CdsRequestError e) {
			ourLog.warn("CDS service {} not evaluated: HTTP {} {}", id, e.status(), e.getMessage());
			write(resp, e.status(), Map.of("error", e.getMessage()));
		} catch (com.fasterxml.jackson.core.JacksonException e) {
			write(resp, 400, Map.of("error", "the request body is not valid JSON"));
		} catch (BaseServerResponseException e) {
			ourLog.warn("CDS service {} failed: {}", id, e.getMessage());
			write(resp, e.getStatusCode(), Map.of("error", String.valueOf(e.getMessage())));
		} catch (Exception e) {
			ourLog.error("CDS service {} failed", id, e);
			write(resp, 500, Map.of("error", String.valueOf(e)));
		}
	}

	/** True when fhirServer names this server's own FHIR endpoint (loopback or our address, our port, /fhir). */
	private static boolean pointsHere(HttpServletRequest req, JsonNode fhirServer) {
		if (fhirServer == null || !fhirServer.isTextual()) {
			return false;
		}
		try {
			URI uri = URI.create(fhirServer.asText());
			String host = uri.getHost() == null ? "" : uri.getHost();
			boolean local = host.equals("localhost") || host.startsWith("127.") || host.equals("[::1]")
					|| host.equals(req.getLocalAddr()) || host.equals(req.getServerName());
			int port = uri.getPort() != -1 ? uri.getPort() : ("https".equals(uri.getScheme()) ? 443 : 80);
			String path = uri.getPath() == null ? "" : uri.getPath().replaceAll("/+$", "");
			return local && port == req.getLocalPort() && path.equals("/fhir");
		} catch (IllegalArgumentException e) {
			return false;
		}
	}

	/** The id after /cds-services/, or null for the discovery endpoint itself. */
	private static String serviceId(HttpServletRequest req) {
		String path = req.getPathInfo();
		if (path == null || path.equals("/")) {
			return null;
		}
		return path.substring(1).replaceAll("/+$", "");
	}

	private void write(HttpServletResponse resp, int status, Object body) throws IOException {
		resp.setStatus(status);
		resp.setContentType("application/json;charset=UTF-8");
		mapper.writerWithDefaultPrettyPrinter().writeValue(resp.getOutputStream(), body);
	}
}
