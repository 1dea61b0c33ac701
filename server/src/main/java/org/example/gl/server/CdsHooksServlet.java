package org.example.gl.server;

import ca.uhn.fhir.rest.server.exceptions.BaseServerResponseException;
import ca.uhn.hapi.fhir.cdshooks.api.ICdsServiceRegistry;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import ca.uhn.hapi.fhir.cdshooks.api.json.CdsServiceJson;
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.net.URI;
import java.time.Duration;
import java.util.Map;
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

	public CdsHooksServlet(ICdsServiceRegistry registry, ObjectMapper mapper, Duration fhirServerBudget) {
		this.registry = registry;
		this.mapper = mapper;
		this.prefetch = new PrefetchResolver(mapper, fhirServerBudget);
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
		write(resp, 200, body);
	}

	@Override
	protected void doPost(HttpServletRequest req, HttpServletResponse resp) throws IOException {
		String id = serviceId(req);
		if (id == null) {
			write(resp, 404, Map.of("error", "POST to /cds-services/{id}"));
			return;
		}
		CdsServiceJson service;
		try {
			service = registry.getCdsServiceJson(id);
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
			prefetch.resolve(object, PrefetchResolver.templates(service.getPrefetch()), pointsHere(req, object.get("fhirServer")));
			write(resp, 200, registry.callService(id, request));
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
