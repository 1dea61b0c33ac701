package org.example.gl.server;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Completes a CDS Hooks request's prefetch before evaluation, so the engine never silently sees "no data".
 *
 * <p>CDS Hooks 2.0: the client may send all, some or none of the prefetch templates, and a key may be {@code null}
 * (or an OperationOutcome) when it could not fetch it. Every key the client did not fill is read here from the
 * request's {@code fhirServer} with {@code fhirAuthorization.access_token} (used for that server only, never logged
 * or kept). Without a {@code fhirServer} the call answers 412. The EHR server answering 401/403/4xx/5xx, being
 * unreachable, or exceeding the time budget answers 502/504 naming the server and status: never {@code {"cards": []}}.
 */
public class PrefetchResolver {
	private static final Pattern TOKEN = Pattern.compile("\\{\\{\\s*context\\.([A-Za-z]+)\\s*}}");
	/** CR 4.4.0 writes the Patient template as a search on _id; a plain read is what EHRs expect. */
	private static final Pattern PATIENT_BY_ID = Pattern.compile("^Patient\\?_id=(?:Patient/)?(\\{\\{\\s*context\\.patientId\\s*}})$");
	private static final int MAX_PAGES = 50;

	private final ObjectMapper mapper;
	private final HttpClient http;
	private final Duration budget;

	public PrefetchResolver(ObjectMapper mapper, Duration budget) {
		this.mapper = mapper;
		this.budget = budget;
		this.http = HttpClient.newBuilder()
				.connectTimeout(budget)
				.followRedirects(HttpClient.Redirect.NEVER) // a redirect could carry the token to another origin
				.build();
	}

	/**
	 * The discovery template for a key as this service publishes it: Patient as a read; medication searches with
	 * {@code _include} of the Medication they reference (the logic reads a medicationReference's code, which a
	 * search without it does not carry, so a prefetch-only client would lose "on bromocriptine" given by reference;
	 * administrations and dispenses likewise, for insulin exposure, project safety rule 12);
	 * the rest unchanged.
	 */
	public static String normalizeTemplate(String template) {
		String t = template.strip();
		Matcher m = PATIENT_BY_ID.matcher(t);
		if (m.matches()) {
			return "Patient/" + m.group(1);
		}
		for (String type : List.of("MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense")) {
			if (t.startsWith(type + "?") && !t.contains("_include=")) {
				return t + "&_include=" + type + ":medication";
			}
		}
		return template;
	}

	/** Prefetch templates of a service, normalized. */
	public static Map<String, String> templates(Map<String, String> raw) {
		Map<String, String> out = new LinkedHashMap<>();
		if (raw != null) {
			raw.forEach((k, v) -> out.put(k, normalizeTemplate(v)));
		}
		return out;
	}

	/**
	 * Fills {@code request.prefetch} so every template key holds a searchset Bundle. {@code dataHere}: the
	 * request's fhirServer is this server, whose stored data the engine reads anyway, so every key gets an empty
	 * Bundle (a copy of the same data would be counted twice).
	 */
	public void resolve(ObjectNode request, Map<String, String> templates, boolean dataHere) {
		JsonNode given = request.get("prefetch");
		if (given != null && !given.isNull() && !given.isObject()) {
			throw new CdsRequestError(400, "prefetch must be a JSON object of key -> FHIR resource");
		}
		ObjectNode prefetch = given instanceof ObjectNode o ? o : request.putObject("prefetch");
		String fhirServer = text(request.get("fhirServer"));
		JsonNode auth = request.get("fhirAuthorization");
		if (auth != null && !auth.isNull() && fhirServer == null) {
			throw new CdsRequestError(400, "fhirAuthorization was sent without fhirServer (CDS Hooks 2.0: it implies fhirServer)");
		}
		String token = auth == null ? null : text(auth.get("access_token"));
		List<String> missing = new ArrayList<>();
		for (String key : templates.keySet()) {
			JsonNode value = prefetch.get(key);
			if (dataHere) {
				prefetch.set(key, emptyBundle());
			} else if (usable(value)) {
				prefetch.set(key, asBundle(value));
			} else {
				missing.add(key);
			}
		}
		if (missing.isEmpty()) {
			return;
		}
		if (fhirServer == null) {
			throw new CdsRequestError(412, "prefetch " + String.join(", ", missing)
					+ " not sent and no fhirServer to read it from; send the prefetch or fhirServer (+ fhirAuthorization)");
		}
		JsonNode context = request.get("context");
		long deadline = System.nanoTime() + budget.toNanos();
		for (String key : missing) {
			String query = fill(templates.get(key), context, key);
			prefetch.set(key, fetch(fhirServer, query, token, deadline));
		}
	}

	/** Every template with the request's context filled in (key -> query), as {@link #resolve} would read them. */
	public static Map<String, String> queries(ObjectNode request, Map<String, String> templates) {
		Map<String, String> out = new LinkedHashMap<>();
		templates.forEach((key, t) -> out.put(key, fill(t, request.get("context"), key)));
		return out;
	}

	private static boolean usable(JsonNode value) {
		return value != null && value.isObject() && value.hasNonNull("resourceType")
				&& !"OperationOutcome".equals(value.get("resourceType").asText());
	}

	private ObjectNode emptyBundle() {
		ObjectNode b = mapper.createObjectNode();
		b.put("resourceType", "Bundle").put("type", "searchset");
		b.putArray("entry");
		return b;
	}

	/** A prefetched read (a resource) becomes a one-entry searchset Bundle, which is what CR accepts. */
	private JsonNode asBundle(JsonNode value) {
		if ("Bundle".equals(value.get("resourceType").asText())) {
			return value;
		}
		ObjectNode b = emptyBundle();
		((ArrayNode) b.get("entry")).addObject().set("resource", value);
		return b;
	}

	private static String fill(String template, JsonNode context, String key) {
		Matcher m = TOKEN.matcher(template);
		StringBuilder sb = new StringBuilder();
		while (m.find()) {
			JsonNode v = context == null ? null : context.get(m.group(1));
			if (v == null || !v.isTextual() || v.asText().isBlank()) {
				throw new CdsRequestError(400, "prefetch " + key + " needs context." + m.group(1) + ", which the request lacks");
			}
			String id = v.asText().replaceFirst("^Patient/", "");
			m.appendReplacement(sb, Matcher.quoteReplacement(URLEncoder.encode(id, StandardCharsets.UTF_8)));
		}
		m.appendTail(sb);
		return sb.toString();
	}

	// Long: one read or search, all its pages, every failure mapped to a status that names the server
	private JsonNode fetch(String fhirServer, String query, String token, long deadline) {
		String base = fhirServer.replaceAll("/+$", "");
		String url = base + "/" + encodeQuery(query);
		boolean read = !query.contains("?");
		ObjectNode merged = null;
		for (int page = 0; url != null && page < MAX_PAGES; page++) {
			if (!url.startsWith(base + "/") && !url.startsWith(base + "?")) {
				throw new CdsRequestError(502, "fhirServer " + base + " returned a next link to another server; not followed");
			}
			JsonNode body = get(base, url, query, token, deadline, read);
			if (read || !"Bundle".equals(body.path("resourceType").asText())) {
				return asBundle(body);
			}
			if (merged == null) {
				merged = emptyBundle();
			}
			for (JsonNode e : body.path("entry")) {
				if (!"outcome".equals(e.path("search").path("mode").asText())) {
					((ArrayNode) merged.get("entry")).add(e);
				}
			}
			url = null;
			for (JsonNode link : body.path("link")) {
				if ("next".equals(link.path("relation").asText())) {
					url = link.path("url").asText(null);
				}
			}
		}
		if (url != null) {
			throw new CdsRequestError(502, "fhirServer " + base + ": " + query + " has more than " + MAX_PAGES + " pages");
		}
		return merged;
	}

	/** Percent-encodes what a URI may not carry raw (the token separator '|', spaces, braces...), keeps the rest. */
	static String encodeQuery(String query) {
		StringBuilder sb = new StringBuilder();
		for (byte b : query.getBytes(StandardCharsets.UTF_8)) {
			int c = b & 0xff;
			boolean keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
					|| "-._~/?&=,:;@!$'()*+%".indexOf(c) >= 0;
			sb.append(keep ? String.valueOf((char) c) : String.format("%%%02X", c));
		}
		return sb.toString();
	}

	private JsonNode get(String base, String url, String query, String token, long deadline, boolean read) {
		long left = deadline - System.nanoTime();
		if (left <= 0) {
			throw new CdsRequestError(504, "fhirServer " + base + " did not deliver the prefetch within " + budget.toSeconds() + " s");
		}
		HttpRequest.Builder rb;
		try {
			rb = HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofNanos(left)).header("Accept", "application/fhir+json");
		} catch (IllegalArgumentException e) {
			throw new CdsRequestError(400, "fhirServer " + base + " with prefetch " + query + " is not a valid URL");
		}
		if (token != null) {
			rb.header("Authorization", "Bearer " + token);
		}
		HttpResponse<byte[]> resp;
		try {
			resp = http.send(rb.GET().build(), HttpResponse.BodyHandlers.ofByteArray());
		} catch (HttpTimeoutException e) {
			throw new CdsRequestError(504, "fhirServer " + base + " did not answer GET " + query + " within " + budget.toSeconds() + " s");
		} catch (IOException e) {
			throw new CdsRequestError(502, "fhirServer " + base + " cannot be reached (" + e.getClass().getSimpleName() + ")");
		} catch (InterruptedException e) {
			Thread.currentThread().interrupt();
			throw new CdsRequestError(503, "interrupted while reading fhirServer " + base);
		}
		int status = resp.statusCode();
		if (status == 404 && read) {
			throw new CdsRequestError(412, "fhirServer " + base + " has no " + query + " (404); cannot evaluate without it");
		}
		if (status != 200) {
			String hint = status == 401 || status == 403 ? " (fhirAuthorization missing, expired or not allowed)" : "";
			throw new CdsRequestError(502, "fhirServer " + base + " answered HTTP " + status + " to GET " + query + hint);
		}
		try {
			return mapper.readTree(resp.body());
		} catch (IOException e) {
			throw new CdsRequestError(502, "fhirServer " + base + " answered GET " + query + " with something that is not JSON");
		}
	}

	private static String text(JsonNode n) {
		return n != null && n.isTextual() && !n.asText().isBlank() ? n.asText() : null;
	}
}
