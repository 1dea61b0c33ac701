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
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
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
 *
 * <p>Published templates stay inside CDS Hooks 2.0's recommended subset ("Prefetch query restrictions",
 * https://cds-hooks.hl7.org/2.0/#prefetch-query-restrictions: "this specification RECOMMENDS that prefetch queries
 * only use a subset of the full functionality available in the FHIR specification": instance reads, type searches,
 * resource references such as {@code patient={{context.patientId}}}, token equality optionally with {@code :in},
 * date prefixes eq/lt/gt/ge/le, {@code _count}, {@code _sort}). EHR FHIR APIs that hold to it refuse
 * {@code _include}, so the medication searches carry none unless {@code guideline.cds.prefetch-include-medication}
 * says the EHRs served accept it. The Medications that medication resources reference
 * ({@code medicationReference}) are then read one by one from {@code fhirServer} (instance reads, each once, in
 * the same time budget and with the same token); with prefetch only, a referenced Medication the prefetch lacks is
 * a 412 naming it and its referrer: the logic reads a referenced Medication's code (bromocriptine, insulin:
 * project safety rule 12), so evaluating without it could silently lose a card.
 */
public class PrefetchResolver {
	private static final Pattern TOKEN = Pattern.compile("\\{\\{\\s*context\\.([A-Za-z]+)\\s*}}");
	/** CR 4.4.0 writes the Patient template as a search on _id; a plain read is what EHRs expect. */
	private static final Pattern PATIENT_BY_ID = Pattern.compile("^Patient\\?_id=(?:Patient/)?(\\{\\{\\s*context\\.patientId\\s*}})$");
	private static final int MAX_PAGES = 50;
	/** The resource types whose {@code medicationReference} the logic follows to a Medication. */
	static final List<String> MEDICATION_USES =
			List.of("MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense");
	/**
	 * The prefetch key under which the Medications read for references are added: not a template key (discovery
	 * never lists it), so no client value is overwritten; the evaluation reads every key's resources alike.
	 */
	static final String REFERENCED_MEDICATIONS = "org.example.gl.referenced-medications";
	private static final Pattern MEDICATION_REF = Pattern.compile("^Medication/([A-Za-z0-9\\-.]{1,64})(?:/_history/[^/]+)?$");
	/** How many missing references a 412 names before "and N more". */
	private static final int NAMED_MISSING = 5;

	private final ObjectMapper mapper;
	private final HttpClient http;
	private final Duration budget;
	private final boolean includeMedication;

	/**
	 * The resolver writing JSON with {@code mapper}; {@code budget} bounds all fhirServer reads of one call;
	 * {@code includeMedication} (setting {@code guideline.cds.prefetch-include-medication}) puts
	 * {@code _include=<type>:medication} back into the medication templates for EHRs known to support it.
	 */
	public PrefetchResolver(ObjectMapper mapper, Duration budget, boolean includeMedication) {
		this.mapper = mapper;
		this.budget = budget;
		this.includeMedication = includeMedication;
		this.http = HttpClient.newBuilder()
				.connectTimeout(budget)
				.followRedirects(HttpClient.Redirect.NEVER) // a redirect could carry the token to another origin
				.build();
	}

	/** The discovery template for a key as this service publishes it, with this resolver's setting. */
	public String normalizeTemplate(String template) {
		return normalizeTemplate(template, includeMedication);
	}

	/**
	 * The discovery template for a key as this service publishes it: Patient as a read; the rest unchanged, inside
	 * the CDS Hooks 2.0 subset (no {@code _include}, see the class comment). With {@code includeMedication} the
	 * medication searches get {@code _include} of the Medication they reference, for EHRs known to support it (a
	 * prefetch-only call then carries the referenced Medications itself).
	 */
	public static String normalizeTemplate(String template, boolean includeMedication) {
		String t = template.strip();
		Matcher m = PATIENT_BY_ID.matcher(t);
		if (m.matches()) {
			return "Patient/" + m.group(1);
		}
		for (String type : MEDICATION_USES) {
			if (!t.startsWith(type + "?")) {
				continue;
			}
			String without = withoutMedicationInclude(t, type);
			return includeMedication ? without + "&_include=" + type + ":medication" : without;
		}
		return template;
	}

	/** {@code template} without its {@code _include=<type>:medication} parameter (if any), the rest in order. */
	private static String withoutMedicationInclude(String template, String type) {
		int q = template.indexOf('?');
		List<String> kept = new ArrayList<>();
		for (String param : template.substring(q + 1).split("&")) {
			if (!param.equals("_include=" + type + ":medication")) {
				kept.add(param);
			}
		}
		return template.substring(0, q + 1) + String.join("&", kept);
	}

	/** Prefetch templates of a service, normalized. */
	public Map<String, String> templates(Map<String, String> raw) {
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
		if (!missing.isEmpty() && fhirServer == null) {
			throw new CdsRequestError(412, "prefetch " + String.join(", ", missing)
					+ " not sent and no fhirServer to read it from; send the prefetch or fhirServer (+ fhirAuthorization)");
		}
		JsonNode context = request.get("context");
		long deadline = System.nanoTime() + budget.toNanos(); // one budget for all reads of the call
		for (String key : missing) {
			String query = fill(templates.get(key), context, key);
			prefetch.set(key, fetch(fhirServer, query, token, deadline));
		}
		if (!dataHere) {
			addReferencedMedications(prefetch, fhirServer, token, deadline);
		}
	}

	/**
	 * Completes the prefetch with every Medication its medication resources reference and it lacks: read from
	 * {@code fhirServer} (instance reads, each Medication once), or, without one, a 412 naming them. Contained
	 * ({@code #id}) Medications travel with their resource; a reference without a {@code reference} string (display
	 * or identifier only) has nothing to read and the logic uses its text.
	 */
	private void addReferencedMedications(ObjectNode prefetch, String fhirServer, String token, long deadline) {
		String base = fhirServer == null ? null : fhirServer.replaceAll("/+$", "");
		Set<String> present = new LinkedHashSet<>();
		List<JsonNode> resources = new ArrayList<>();
		for (JsonNode value : prefetch) {
			for (JsonNode r : resourcesOf(value)) {
				resources.add(r);
				present.add(r.path("resourceType").asText() + "/" + r.path("id").asText());
			}
		}
		Map<String, String> missing = new LinkedHashMap<>(); // Medication/id -> its first referrer
		for (JsonNode r : resources) {
			String type = r.path("resourceType").asText();
			String ref = r.path("medicationReference").path("reference").asText("");
			if (!MEDICATION_USES.contains(type) || ref.isBlank() || ref.startsWith("#")) {
				continue;
			}
			String referrer = type + "/" + r.path("id").asText();
			String relative = ref;
			if (ref.contains("://")) {
				// an absolute reference is read only from the request's own fhirServer (the token is for it alone)
				if (base == null || !ref.startsWith(base + "/")) {
					String wanted = ref.replaceFirst("^.*/(Medication/[^/]+)(/_history/[^/]+)?$", "$1");
					if (!present.contains(wanted)) {
						throw new CdsRequestError(412, ref + " referenced by " + referrer + " is neither in the prefetch nor on"
								+ " the request's fhirServer; cannot evaluate without it (send it in the prefetch)");
					}
					continue;
				}
				relative = ref.substring(base.length() + 1);
			}
			Matcher m = MEDICATION_REF.matcher(relative);
			if (!m.matches()) {
				throw new CdsRequestError(412, referrer + ".medicationReference " + ref + " is not a Medication/id reference"
						+ " this service can read; send the Medication contained (#id) or referenced as Medication/id");
			}
			String key = "Medication/" + m.group(1);
			if (!present.contains(key)) {
				missing.putIfAbsent(key, referrer);
			}
		}
		if (missing.isEmpty()) {
			return;
		}
		if (base == null) {
			List<String> named = missing.entrySet().stream().limit(NAMED_MISSING)
					.map(e -> e.getKey() + " referenced by " + e.getValue()).toList();
			String more = missing.size() > NAMED_MISSING ? " and " + (missing.size() - NAMED_MISSING) + " more" : "";
			throw new CdsRequestError(412, "prefetch lacks " + String.join(", ", named) + more
					+ " and there is no fhirServer to read it from; send the referenced Medications in the prefetch"
					+ " (as a search's _include entries) or fhirServer (+ fhirAuthorization)");
		}
		ObjectNode read = emptyBundle();
		for (Map.Entry<String, String> e : missing.entrySet()) {
			JsonNode medication;
			try {
				medication = get(base, base + "/" + encodeQuery(e.getKey()), e.getKey(), token, deadline, true);
			} catch (CdsRequestError error) {
				throw new CdsRequestError(error.status(), error.getMessage() + " (" + e.getKey() + " is referenced by "
						+ e.getValue() + ")");
			}
			((ArrayNode) read.get("entry")).addObject().set("resource", medication);
		}
		prefetch.set(REFERENCED_MEDICATIONS, read);
	}

	/** The resources of a prefetch value (a Bundle's entries or one resource), OperationOutcomes left out. */
	private static List<JsonNode> resourcesOf(JsonNode value) {
		List<JsonNode> out = new ArrayList<>();
		if (value == null || !value.isObject()) {
			return out;
		}
		if ("Bundle".equals(value.path("resourceType").asText())) {
			value.path("entry").forEach(e -> out.add(e.path("resource")));
		} else {
			out.add(value);
		}
		out.removeIf(r -> !r.isObject() || "OperationOutcome".equals(r.path("resourceType").asText()));
		return out;
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
