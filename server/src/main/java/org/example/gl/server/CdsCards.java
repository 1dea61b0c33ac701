package org.example.gl.server;

import ca.uhn.fhir.context.FhirContext;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.function.Function;
import org.hl7.fhir.r4.model.ActivityDefinition;
import org.hl7.fhir.r4.model.CarePlan;
import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.hl7.fhir.r4.model.RequestGroup;
import org.hl7.fhir.r4.model.Resource;

/**
 * CDS Hooks 2.0 cards from the RequestGroup of a recommendation's $apply result (not CR's encoder, which drops
 * suggestions): one card per top-level action, a {@code uuid} on every card and suggestion, a summary under 140
 * characters, {@code indicator} from the action's priority, {@code source} with label, the recommendation's page and
 * a coded topic, one suggestion per proposed activity ({@code create} of the draft resource), {@code
 * overrideReasons} from the package's code system, and a link to the page. Informational actions (no generated
 * request, e.g. R6) get no suggestion.
 */
public class CdsCards {
	public static final int MAX_SUMMARY = 140;
	private static final String TOPIC_SYSTEM = "http://terminology.hl7.org/CodeSystem/definition-topic";

	private final FhirContext fhir;
	private final ObjectMapper mapper;
	private final String siteBase;
	private final Function<String, ActivityDefinition> activities;
	private final OverrideReasons overrideReasons;

	/**
	 * {@code siteBase}: where the rendered site's pages are ("" = the package canonical, where it is published);
	 * {@code activities}: the stored ActivityDefinition with an id, or null; {@code overrideReasons}: what a card
	 * with suggestions offers as overrideReasons (the package's CodeSystem).
	 */
	public CdsCards(FhirContext fhir, ObjectMapper mapper, String siteBase, Function<String, ActivityDefinition> activities,
			OverrideReasons overrideReasons) {
		this.fhir = fhir;
		this.mapper = mapper;
		this.activities = activities;
		this.overrideReasons = overrideReasons;
		this.siteBase = siteBase == null ? "" : siteBase.strip().replaceAll("/+$", "");
	}

	/** The canonical base of a package resource (its url up to "/PlanDefinition/..."), or "" without a url. */
	public static String canonicalBase(PlanDefinition plan) {
		String url = plan.getUrl();
		if (url == null || !url.contains("/PlanDefinition/")) {
			return "";
		}
		return url.substring(0, url.indexOf("/PlanDefinition/"));
	}

	/** The rendered site's page of a recommendation (guideline render: rec-ID.html). */
	public String pageUrl(PlanDefinition plan) {
		String base = siteBase.isEmpty() ? canonicalBase(plan) : siteBase;
		return base + "/rec-" + plan.getIdElement().getIdPart() + ".html";
	}

	/** Cards for one $apply result, in the order of the RequestGroup's actions. */
	public List<ObjectNode> cards(CdsEvaluator.Applied applied, String patientId) {
		CarePlan cp = applied.carePlan();
		RequestGroup group = null;
		for (Resource r : cp.getContained()) {
			if (r instanceof RequestGroup g) {
				group = g;
			}
		}
		List<ObjectNode> out = new ArrayList<>();
		if (group == null) {
			return out;
		}
		for (RequestGroup.RequestGroupActionComponent action : group.getAction()) {
			if (action == null) {
				continue; // CR 4.4.0 leaves a null where an action's applicability condition was false
			}
			out.add(card(applied.plan(), cp, action, patientId));
		}
		return out;
	}

	// Long: one card's fields in CDS Hooks order, each a line or two
	private ObjectNode card(
			PlanDefinition plan, CarePlan cp, RequestGroup.RequestGroupActionComponent action, String patientId) {
		ObjectNode c = mapper.createObjectNode();
		c.put("uuid", UUID.randomUUID().toString());
		c.put("summary", summary(action.hasTitle() ? action.getTitle() : plan.getTitle()));
		if (action.hasDescription()) {
			c.put("detail", action.getDescription());
		}
		c.put("indicator", indicator(action.hasPriority() ? action.getPriority().toCode() : "routine"));
		ObjectNode source = c.putObject("source");
		source.put("label", plan.hasTitle() ? plan.getTitle() : plan.getName());
		String page = pageUrl(plan);
		source.put("url", page);
		source.set("topic", topic(plan));
		List<ObjectNode> suggestions = new ArrayList<>();
		suggestions(plan, cp, List.of(action), patientId, suggestions); // a single-activity action carries its own resource
		if (!suggestions.isEmpty()) {
			c.putArray("suggestions").addAll(suggestions);
			c.put("selectionBehavior", "any");
			ArrayNode reasons = c.putArray("overrideReasons");
			var offered = overrideReasons.forPackage(canonicalBase(plan));
			for (OverrideReasons.Reason r : offered.reasons()) {
				reasons.addObject().put("system", offered.system()).put("code", r.code()).put("display", r.display());
			}
		}
		ArrayNode links = c.putArray("links");
		links.addObject()
				.put("label", "The recommendation: source quote, conditions, ratings, safety rules")
				.put("url", page)
				.put("type", "absolute");
		return c;
	}

	/** One suggestion per sub-action (depth first) whose resource is a request $apply generated. */
	private void suggestions(
			PlanDefinition plan,
			CarePlan cp,
			List<RequestGroup.RequestGroupActionComponent> actions,
			String patientId,
			List<ObjectNode> out) {
		for (RequestGroup.RequestGroupActionComponent a : actions) {
			if (a == null) {
				continue;
			}
			Resource generated = a.hasResource() ? contained(cp, a.getResource().getReference()) : null;
			if (generated != null && !(generated instanceof RequestGroup)) {
				ObjectNode s = mapper.createObjectNode();
				s.put("label", a.hasTitle() ? a.getTitle() : generated.fhirType());
				s.put("uuid", UUID.randomUUID().toString());
				s.put("isRecommended", true);
				ObjectNode act = s.putArray("actions").addObject();
				act.put("type", "create");
				act.put("description", "Draft " + generated.fhirType() + (a.hasTitle() ? ": " + a.getTitle() : ""));
				ObjectNode draft = draft(generated, patientId);
				if ("CommunicationRequest".equals(generated.fhirType()) && !draft.has("category")) {
					// R4 CommunicationRequest has no code: the ActivityDefinition's code goes to category, so the draft
					// is still coded exactly as its definition (CR leaves it uncoded).
					ActivityDefinition def = definition(plan, a.getId());
					if (def != null && def.hasCode()) {
						draft.putArray("category").add(codeable(def));
					}
				}
				act.set("resource", draft);
				out.add(s);
			}
			suggestions(plan, cp, a.getAction(), patientId, out);
		}
	}

	/** The ActivityDefinition behind a RequestGroup action (CR keeps the PlanDefinition action's id). */
	private ActivityDefinition definition(PlanDefinition plan, String actionId) {
		String ref = findCanonical(plan.getAction(), actionId);
		if (ref == null || !ref.contains("ActivityDefinition/")) {
			return null;
		}
		return activities.apply(ref.substring(ref.lastIndexOf("ActivityDefinition/") + "ActivityDefinition/".length()).split("\\|")[0]);
	}

	private static String findCanonical(List<PlanDefinition.PlanDefinitionActionComponent> actions, String id) {
		for (PlanDefinition.PlanDefinitionActionComponent a : actions) {
			if (id != null && id.equals(a.getId()) && a.hasDefinitionCanonicalType()) {
				return a.getDefinitionCanonicalType().getValue();
			}
			String nested = findCanonical(a.getAction(), id);
			if (nested != null) {
				return nested;
			}
		}
		return null;
	}

	private JsonNode codeable(ActivityDefinition def) {
		try {
			String json = fhir.newJsonParser().encodeToString(def.getCode());
			return mapper.readTree(json);
		} catch (IOException e) {
			throw new UncheckedIOException(e);
		}
	}

	private static Resource contained(CarePlan cp, String ref) {
		if (ref == null || !ref.startsWith("#")) {
			return null;
		}
		for (Resource r : cp.getContained()) {
			if (ref.substring(1).equals(r.getIdPart())) {
				return r;
			}
		}
		return null;
	}

	/** The generated request as a draft order to create on the EHR: status draft, intent proposal, the patient. */
	private ObjectNode draft(Resource generated, String patientId) {
		ObjectNode r;
		try {
			r = (ObjectNode) mapper.readTree(fhir.newJsonParser().encodeResourceToString(generated));
		} catch (IOException e) {
			throw new UncheckedIOException(e);
		}
		r.remove("id"); // a new resource: the EHR assigns the id
		r.remove("meta");
		// The ActivityDefinition's cqf-knowledgeCapability extensions describe knowledge, not an order: dropped.
		if (r.get("extension") instanceof ArrayNode ext) {
			ArrayNode kept = mapper.createArrayNode();
			ext.forEach(e -> {
				if (!e.path("url").asText().endsWith("/cqf-knowledgeCapability")) {
					kept.add(e);
				}
			});
			if (kept.isEmpty()) {
				r.remove("extension");
			} else {
				r.set("extension", kept);
			}
		}
		r.put("status", "draft");
		r.put("intent", "proposal");
		String subject = "NutritionOrder".equals(generated.fhirType()) ? "patient" : "subject";
		((ObjectNode) r.withObject("/" + subject)).removeAll().put("reference", "Patient/" + patientId);
		return r;
	}

	/** The PlanDefinition's own topic, else definition-topic "treatment" (every recommendation here treats or assesses). */
	private JsonNode topic(PlanDefinition plan) {
		Coding coding = plan.getTopic().stream()
				.flatMap(t -> t.getCoding().stream())
				.findFirst()
				.orElse(new Coding(TOPIC_SYSTEM, "treatment", "Treatment"));
		ObjectNode t = mapper.createObjectNode();
		t.put("system", coding.getSystem()).put("code", coding.getCode());
		if (coding.hasDisplay()) {
			t.put("display", coding.getDisplay());
		}
		return t;
	}

	/** CDS Hooks 2.0 indicator from the action's priority: routine info, urgent warning, asap/stat critical. */
	static String indicator(String priority) {
		return switch (priority == null ? "" : priority) {
			case "urgent" -> "warning";
			case "asap", "stat" -> "critical";
			default -> "info";
		};
	}

	/** The summary under 140 characters: longer ones are cut at a word and end with an ellipsis. */
	static String summary(String text) {
		String s = text == null ? "" : text.strip();
		if (s.length() < MAX_SUMMARY) {
			return s;
		}
		String cut = s.substring(0, MAX_SUMMARY - 2);
		int space = cut.lastIndexOf(' ');
		return (space > 80 ? cut.substring(0, space) : cut) + "\u2026";
	}
}
