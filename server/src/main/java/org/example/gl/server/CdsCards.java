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
import org.example.gl.engine.Pathway;
import org.hl7.fhir.r4.model.ActivityDefinition;
import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.hl7.fhir.r4.model.Resource;

/**
 * CDS Hooks 2.0 cards from a recommendation that applies, as the evaluation core returns it (or as
 * {@link CdsEvaluator#recommendations} reads an {@code $apply} result into the same shape; not CR's encoder, which
 * drops suggestions): one card per top-level action, a {@code uuid} on every card and suggestion, a summary under 140
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
	private final OverrideReasons overrideReasons;

	/**
	 * {@code siteBase}: where the rendered site's pages are ("" = the package canonical, where it is published);
	 * {@code overrideReasons}: what a card with suggestions offers as overrideReasons (the package's CodeSystem).
	 */
	public CdsCards(FhirContext fhir, ObjectMapper mapper, String siteBase, OverrideReasons overrideReasons) {
		this.fhir = fhir;
		this.mapper = mapper;
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

	/** Cards for one recommendation that applies: one per top-level action that applies, in order. */
	public List<ObjectNode> cards(Pathway.Recommendation recommendation, String patientId) {
		List<ObjectNode> out = new ArrayList<>();
		for (Pathway.Action action : recommendation.actions()) {
			out.add(card(recommendation.plan(), action, patientId));
		}
		return out;
	}

	// Long: one card's fields in CDS Hooks order, each a line or two
	private ObjectNode card(PlanDefinition plan, Pathway.Action action, String patientId) {
		ObjectNode c = mapper.createObjectNode();
		c.put("uuid", UUID.randomUUID().toString());
		c.put("summary", summary(action.title() != null ? action.title() : plan.getTitle()));
		if (action.description() != null) {
			c.put("detail", action.description());
		}
		c.put("indicator", indicator(action.priority() != null ? action.priority() : "routine"));
		ObjectNode source = c.putObject("source");
		source.put("label", plan.hasTitle() ? plan.getTitle() : plan.getName());
		String page = pageUrl(plan);
		source.put("url", page);
		source.set("topic", topic(plan));
		List<ObjectNode> suggestions = new ArrayList<>();
		suggestions(List.of(action), patientId, suggestions); // a single-activity action carries its own resource
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

	/** One suggestion per action (depth first) that has a draft resource. */
	private void suggestions(List<Pathway.Action> actions, String patientId, List<ObjectNode> out) {
		for (Pathway.Action a : actions) {
			Resource generated = a.resource();
			if (generated != null) {
				ObjectNode s = mapper.createObjectNode();
				s.put("label", a.title() != null ? a.title() : generated.fhirType());
				s.put("uuid", UUID.randomUUID().toString());
				s.put("isRecommended", true);
				ObjectNode act = s.putArray("actions").addObject();
				act.put("type", "create");
				act.put("description", "Draft " + generated.fhirType() + (a.title() != null ? ": " + a.title() : ""));
				ObjectNode draft = draft(generated, patientId);
				if ("CommunicationRequest".equals(generated.fhirType()) && !draft.has("category")) {
					// R4 CommunicationRequest has no code: the ActivityDefinition's code goes to category, so the draft
					// is still coded exactly as its definition (CR leaves it uncoded).
					ActivityDefinition def = a.definition();
					if (def != null && def.hasCode()) {
						draft.putArray("category").add(codeable(def));
					}
				}
				act.set("resource", draft);
				out.add(s);
			}
			suggestions(a.actions(), patientId, out);
		}
	}

	private JsonNode codeable(ActivityDefinition def) {
		try {
			String json = fhir.newJsonParser().encodeToString(def.getCode());
			return mapper.readTree(json);
		} catch (IOException e) {
			throw new UncheckedIOException(e);
		}
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
