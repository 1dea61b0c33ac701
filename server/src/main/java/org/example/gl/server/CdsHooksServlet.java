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
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.example.gl.engine.Pathway;
import org.hl7.fhir.r4.model.Bundle;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * CDS Hooks HTTP binding: {@code GET /cds-services} (discovery), {@code POST /cds-services/{id}} (call) and
 * {@code POST /cds-services/{id}/feedback}. HAPI's cds-hooks module provides the registry (which services exist,
 * their prefetch templates) but no servlet for a plain JPA server, so this is it. Errors are JSON
 * {@code {"error": ...}} with a status (400 bad request, 404 unknown service or card, 412, 502/504, 500).
 *
 * <p>Prefetch ({@link PrefetchResolver}): keys the client left out, sent as null or as an OperationOutcome are read
 * from the request's {@code fhirServer} with its {@code fhirAuthorization}; without a {@code fhirServer} the call
 * answers 412; a failing EHR server answers 502/504. Evaluation ({@link CdsEvaluator}) is our own $apply path with
 * that data only: the evaluation core by default, or CR's {@code $apply} ({@code useServerData=false}) with
 * {@code guideline.cds.evaluator: apply}. A call whose {@code fhirServer} is this server uses the stored data
 * instead, read once through the service's templates, in-process (with {@code apply}, a per-recommendation service
 * lets the engine search the database). Cards: {@link CdsCards}; feedback: {@link CdsFeedback}.
 * Discovery publishes the Patient template as a read ({@code Patient/{{context.patientId}}}), not CR's
 * {@code Patient?_id=...} search, and no template outside CDS Hooks 2.0's prefetch subset (no {@code _include}
 * unless {@code guideline.cds.prefetch-include-medication}); referenced Medications are read by id instead. A
 * servlet Filter on /cds-services/* runs before all of this.
 *
 * <p>Informational recommendations (R6) are offered only when {@code guideline.cds.informational-cards} is on
 * ({@link InformationalCards}, project safety rule 17). Off (the default), their services are left out of
 * discovery, out of the pathway service and its {@code pathway-of} list, and a call or feedback to one is a 404
 * saying why: discovery is what a client calls at every chart opening, so a service listed there would either show
 * the card the setting turns off or be evaluated for nothing.
 */
public class CdsHooksServlet extends HttpServlet {
	private static final Logger ourLog = LoggerFactory.getLogger(CdsHooksServlet.class);

	private final transient ICdsServiceRegistry registry;
	private final transient ObjectMapper mapper;
	private final transient PrefetchResolver prefetch;
	private final String pathwayId;
	private final transient CdsEvaluator evaluator;
	private final transient CdsCards cardMaker;
	private final transient CdsFeedback feedback;
	private final transient InformationalCards informational;
	private final GuidelineProperties.Evaluation evaluation;

	/**
	 * The servlet over HAPI's service {@code registry}, writing JSON with {@code mapper}; {@code fhirServerBudget}
	 * bounds the reads of missing prefetch; {@code prefetchIncludeMedication} (setting
	 * {@code guideline.cds.prefetch-include-medication}) adds {@code _include} of the referenced Medication to the
	 * medication templates, which CDS Hooks 2.0's prefetch subset leaves out ({@link PrefetchResolver});
	 * {@code pathwayId} is the id of the service that runs every recommendation; cards from {@code evaluator} and
	 * {@code cardMaker}, feedback through {@code feedback}; {@code informational} decides whether an informational
	 * recommendation's service is offered; {@code evaluation}: through the evaluation core, or through
	 * {@code $apply} (the old path).
	 */
	public CdsHooksServlet(
			ICdsServiceRegistry registry,
			ObjectMapper mapper,
			Duration fhirServerBudget,
			boolean prefetchIncludeMedication,
			String pathwayId,
			CdsEvaluator evaluator,
			CdsCards cardMaker,
			CdsFeedback feedback,
			InformationalCards informational,
			GuidelineProperties.Evaluation evaluation) {
		this.registry = registry;
		this.mapper = mapper;
		this.prefetch = new PrefetchResolver(mapper, fhirServerBudget, prefetchIncludeMedication);
		this.pathwayId = pathwayId;
		this.evaluator = evaluator;
		this.cardMaker = cardMaker;
		this.feedback = feedback;
		this.informational = informational;
		this.evaluation = evaluation;
	}

	/**
	 * The per-recommendation patient-view services the pathway service runs, in the order of the pathway
	 * PlanDefinition's actions (R1 ... R6); services it does not reach come after, by id. Services not offered
	 * (informational ones while informational cards are off) are left out.
	 */
	private List<CdsServiceJson> recommendationServices() {
		List<CdsServiceJson> all = registry.getCdsServicesJson().getServices();
		List<String> order = evaluator.pathwayPlans();
		return (all == null ? List.<CdsServiceJson>of() : all).stream()
				.filter(s -> "patient-view".equals(s.getHook()) && !pathwayId.equals(s.getId()))
				.filter(s -> informational.offered(s.getId()))
				.sorted(Comparator.comparing((CdsServiceJson s) -> order.contains(s.getId()) ? order.indexOf(s.getId()) : order.size())
						.thenComparing(CdsServiceJson::getId))
				.toList();
	}

	/** One prefetch key per distinct template of the recommendation services (item1, item2, ... in first-seen order). */
	private Map<String, String> unionTemplates(List<CdsServiceJson> services) {
		Map<String, String> byTemplate = new LinkedHashMap<>();
		for (CdsServiceJson s : services) {
			prefetch.templates(s.getPrefetch()).values()
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
		// CDS Hooks extension: the services whose cards this one returns, so a client calling every service for the
		// hook can skip them (guideline cds call does) and show each card once.
		ArrayNode covers = s.putObject("extension").putArray("org.example.gl.pathway-of");
		services.forEach(x -> covers.add(x.getId()));
		return s;
	}

	/** Where a call's data comes from: see {@link #doPost}. */
	private enum Source {
		/** the EHR's: the request's prefetch, completed from its fhirServer */
		PREFETCH,
		/** this server's database, read once through the prefetch templates, in-process */
		STORED_PREFETCH,
		/** this server's database, searched by the engine for each retrieve */
		ENGINE_SEARCH
	}

	/**
	 * Gets the call's data once, then evaluates every PlanDefinition of the call in one pass: through the evaluation
	 * core (one engine call for all of them), or with {@code guideline.cds.evaluator: apply} through {@code $apply}
	 * (one processor, CR's library cache); cards in that order; remembers the cards for feedback.
	 */
	private ObjectNode evaluate(String id, ObjectNode request, List<String> plans, Map<String, String> templates, Source source) {
		prefetch.resolve(request, templates, source != Source.PREFETCH);
		String patient = request.path("context").path("patientId").asText("").replaceFirst("^Patient/", "");
		if (patient.isBlank()) {
			throw new CdsRequestError(400, "context.patientId is missing (patient-view needs it)");
		}
		// The core reads this server's data once through the templates, in memory: it has no database search.
		Source from = source == Source.ENGINE_SEARCH && evaluation == GuidelineProperties.Evaluation.CORE
				? Source.STORED_PREFETCH
				: source;
		Bundle data = switch (from) {
			case PREFETCH -> evaluator.mergedData((ObjectNode) request.get("prefetch"));
			case STORED_PREFETCH -> evaluator.storedData(PrefetchResolver.queries(request, templates).values());
			case ENGINE_SEARCH -> null;
		};
		List<Pathway.Recommendation> recommendations = new ArrayList<>();
		if (evaluation == GuidelineProperties.Evaluation.CORE) {
			recommendations.addAll(evaluator.evaluate(plans, patient, data));
		} else {
			for (CdsEvaluator.Applied applied : evaluator.apply(plans, patient, data)) {
				recommendations.addAll(evaluator.recommendations(applied));
			}
		}
		ObjectNode out = mapper.createObjectNode();
		ArrayNode cards = out.putArray("cards");
		for (Pathway.Recommendation r : recommendations) {
			cardMaker.cards(r, patient).forEach(cards::add);
		}
		feedback.store().recordCards(id, cards);
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
		// services not offered (informational ones while informational cards are off) are not advertised
		ArrayNode listed = (ArrayNode) body.get("services");
		for (int i = listed.size() - 1; i >= 0; i--) {
			if (!informational.offered(listed.get(i).path("id").asText())) {
				listed.remove(i);
			}
		}
		for (JsonNode service : body.get("services")) {
			if (service.get("prefetch") instanceof ObjectNode templates) {
				templates.properties().forEach(e -> e.setValue(
						mapper.getNodeFactory().textNode(prefetch.normalizeTemplate(e.getValue().asText()))));
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
		if (id.endsWith("/feedback")) {
			postFeedback(req, resp, id.substring(0, id.length() - "/feedback".length()));
			return;
		}
		List<CdsServiceJson> recommendations = recommendationServices();
		boolean pathway = id.equals(pathwayId) && !recommendations.isEmpty();
		CdsServiceJson service = pathway ? null : registeredService(id);
		if (!pathway && service == null) {
			write(resp, 404, Map.of("error", notOffered(id)));
			return;
		}
		try {
			JsonNode request = mapper.readTree(req.getInputStream());
			if (!(request instanceof ObjectNode object)) {
				write(resp, 400, Map.of("error", "the request body must be a JSON object (CDS Hooks request)"));
				return;
			}
			// Data on this server (fhirServer = us): the pathway service reads the patient once through its
			// prefetch templates, in-process, and evaluates all six recommendations on that in memory; a
			// per-recommendation service lets the engine search the database for each retrieve, cheaper for one
			// library. Either way the EHR-style prefetch in the request is ignored (it would be a second copy).
			Source source = !pointsHere(req, object.get("fhirServer")) ? Source.PREFETCH
					: pathway ? Source.STORED_PREFETCH : Source.ENGINE_SEARCH;
			List<String> plans = pathway ? recommendations.stream().map(CdsServiceJson::getId).toList() : List.of(id);
			Map<String, String> templates =
					pathway ? unionTemplates(recommendations) : prefetch.templates(service.getPrefetch());
			write(resp, 200, evaluate(id, object, plans, templates, source));
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

	/**
	 * The registered service {@code id}, or null. HAPI's registry throws IllegalArgumentException (HAPI-2536) for
	 * an unknown id, and a NullPointerException while no service at all is registered (a server with no knowledge
	 * published yet): both mean "no such service", a 404 rather than a 500.
	 */
	private CdsServiceJson registeredService(String id) {
		if (!informational.offered(id)) {
			return null; // registered, but turned off: see notOffered
		}
		try {
			return registry.getCdsServiceJson(id);
		} catch (IllegalArgumentException | NullPointerException e) {
			return null;
		}
	}

	/** The 404 message for a service id that is not offered: turned off (informational), or not registered. */
	private String notOffered(String id) {
		if (!informational.offered(id)) {
			return "CDS service '" + id + "' is informational (it proposes nothing) and is not offered while"
					+ " guideline.cds.informational-cards is false (project safety rule 17)";
		}
		return "No CDS service '" + id + "' is registered";
	}

	/** POST /cds-services/{id}/feedback (CDS Hooks 2.0): checked against the cards {@code id} sent, then stored. */
	private void postFeedback(HttpServletRequest req, HttpServletResponse resp, String id) throws IOException {
		boolean known = (id.equals(pathwayId) && !recommendationServices().isEmpty()) || registeredService(id) != null;
		if (!known) {
			write(resp, 404, Map.of("error", notOffered(id)));
			return;
		}
		try {
			feedback.handle(id, mapper.readTree(req.getInputStream()));
			write(resp, 200, mapper.createObjectNode());
		} catch (CdsRequestError e) {
			ourLog.warn("CDS feedback for {} refused: HTTP {} {}", id, e.status(), e.getMessage());
			write(resp, e.status(), Map.of("error", e.getMessage()));
		} catch (com.fasterxml.jackson.core.JacksonException e) {
			write(resp, 400, Map.of("error", "the feedback body is not valid JSON"));
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
