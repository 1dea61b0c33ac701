package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ca.uhn.fhir.context.FhirContext;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.example.gl.engine.Pathway;
import org.hl7.fhir.r4.model.ActivityDefinition;
import org.hl7.fhir.r4.model.CanonicalType;
import org.hl7.fhir.r4.model.CarePlan;
import org.hl7.fhir.r4.model.CodeSystem;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.CommunicationRequest;
import org.hl7.fhir.r4.model.NutritionOrder;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.RequestGroup;
import org.hl7.fhir.r4.model.ServiceRequest;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** CDS Hooks cards from an $apply result (read as the core's result): fields, suggestions, selectionBehavior and override reasons. */
class CdsCardsTest {
	private static final String BASE = "http://example.org/fhir/gl";
	private static final String SYSTEM = BASE + OverrideReasons.SYSTEM_PATH;

	private final FhirContext fhir = FhirContext.forR4Cached();
	private final ObjectMapper mapper = new ObjectMapper();
	private final Map<String, ActivityDefinition> activities = new HashMap<>();
	private final Map<String, CodeSystem> codeSystems = new HashMap<>();
	private CdsCards cards;
	private PlanDefinition plan;
	private CarePlan carePlan;
	private RequestGroup group;

	@BeforeEach
	void setUp() {
		cards = new CdsCards(fhir, mapper, "", new OverrideReasons(codeSystems::get));
		plan = new PlanDefinition();
		plan.setId("GLR1");
		plan.setUrl(BASE + "/PlanDefinition/GLR1");
		plan.setName("GLR1");
		plan.setTitle("Recommendation 1");
		carePlan = new CarePlan();
		group = new RequestGroup();
		group.setId("rg");
		carePlan.addContained(group);
	}

	private List<ObjectNode> run() {
		// the old path's $apply result, read into the core's shape as the apply setting does, then carded
		List<ObjectNode> out = new ArrayList<>();
		for (Pathway.Recommendation r : CdsEvaluator.recommendations(new CdsEvaluator.Applied(plan, carePlan), activities::get)) {
			out.addAll(cards.cards(r, "p1"));
		}
		return out;
	}

	/** An action of the RequestGroup whose generated resource is {@code generated} (contained in the CarePlan). */
	private RequestGroup.RequestGroupActionComponent actionWith(String title, org.hl7.fhir.r4.model.Resource generated) {
		RequestGroup.RequestGroupActionComponent a = new RequestGroup.RequestGroupActionComponent().setTitle(title);
		if (generated != null) {
			carePlan.addContained(generated);
			a.setResource(new Reference("#" + generated.getIdPart()));
		}
		return a;
	}

	private static ServiceRequest serviceRequest(String id) {
		ServiceRequest sr = new ServiceRequest();
		sr.setId(id);
		sr.setSubject(new Reference("Patient/placeholder"));
		sr.getMeta().setVersionId("1");
		sr.addExtension("http://hl7.org/fhir/StructureDefinition/cqf-knowledgeCapability", new org.hl7.fhir.r4.model.CodeType("shareable"));
		sr.addExtension("http://example.org/kept", new org.hl7.fhir.r4.model.StringType("yes"));
		return sr;
	}

	private static CodeSystem codeSystem(String... codeDisplay) {
		CodeSystem cs = new CodeSystem();
		cs.setUrl(SYSTEM);
		for (int i = 0; i < codeDisplay.length; i += 2) {
			cs.addConcept().setCode(codeDisplay[i]).setDisplay(codeDisplay[i + 1]);
		}
		return cs;
	}

	private static List<String> texts(JsonNode array, String field) {
		List<String> out = new ArrayList<>();
		array.forEach(n -> out.add(n.path(field).asText()));
		return out;
	}

	/** Verify that there is one card per top-level action, in order, and none without a RequestGroup or for a null. */
	@Test
	void oneCardPerTopLevelAction() {
		group.addAction(actionWith("First", null));
		group.getAction().add(null); // CR 4.4.0 leaves a null where an applicability condition was false
		group.addAction(actionWith("Second", null));
		assertEquals(List.of("First", "Second"), run().stream().map(c -> c.get("summary").asText()).toList());
		carePlan.getContained().clear();
		assertEquals(List.of(), run());
	}

	/** Verify the card's fields: uuid, summary (plan title as fallback), detail, source, links, default indicator. */
	@Test
	void cardFields() {
		RequestGroup.RequestGroupActionComponent a = actionWith(null, null);
		a.setDescription("Why and what");
		group.addAction(a);
		ObjectNode card = run().get(0);
		assertEquals(36, card.get("uuid").asText().length());
		assertEquals("Recommendation 1", card.get("summary").asText());
		assertEquals("Why and what", card.get("detail").asText());
		assertEquals("info", card.get("indicator").asText());
		assertEquals("Recommendation 1", card.at("/source/label").asText());
		assertEquals(BASE + "/rec-GLR1.html", card.at("/source/url").asText());
		assertEquals("treatment", card.at("/source/topic/code").asText());
		assertEquals("http://terminology.hl7.org/CodeSystem/definition-topic", card.at("/source/topic/system").asText());
		assertEquals(BASE + "/rec-GLR1.html", card.at("/links/0/url").asText());
		assertEquals("absolute", card.at("/links/0/type").asText());
	}

	/** Verify that the plan's own topic and the site base URL are used when given. */
	@Test
	void topicAndSiteBase() {
		cards = new CdsCards(fhir, mapper, "https://site.example/gl/", new OverrideReasons(codeSystems::get));
		plan.addTopic(new CodeableConcept().addCoding(new Coding("http://example.org/topic", "assess", "Assessment")));
		group.addAction(actionWith("A", null));
		ObjectNode card = run().get(0);
		assertEquals("assess", card.at("/source/topic/code").asText());
		assertEquals("Assessment", card.at("/source/topic/display").asText());
		assertEquals("https://site.example/gl/rec-GLR1.html", card.at("/source/url").asText());
	}

	/** Verify the indicator of each priority: routine info, urgent warning, asap and stat critical. */
	@Test
	void indicators() {
		assertEquals("info", CdsCards.indicator("routine"));
		assertEquals("warning", CdsCards.indicator("urgent"));
		assertEquals("critical", CdsCards.indicator("asap"));
		assertEquals("critical", CdsCards.indicator("stat"));
		assertEquals("info", CdsCards.indicator(null));
		group.addAction(actionWith("A", null).setPriority(RequestGroup.RequestPriority.URGENT));
		assertEquals("warning", run().get(0).get("indicator").asText());
	}

	/** Verify that a summary is kept under 140 characters, cut at a word with an ellipsis. */
	@Test
	void summaries() {
		assertEquals("short", CdsCards.summary("  short "));
		String longText = "word ".repeat(40);
		String cut = CdsCards.summary(longText);
		assertTrue(cut.length() < CdsCards.MAX_SUMMARY, cut);
		assertTrue(cut.endsWith("word\u2026"), cut);
		assertEquals("x".repeat(138) + "\u2026", CdsCards.summary("x".repeat(200)));
	}

	/** Verify that an informational action gets no suggestion, selectionBehavior or override reasons. */
	@Test
	void informationalCard() {
		group.addAction(actionWith("Prognosis", null));
		ObjectNode card = run().get(0);
		assertFalse(card.has("suggestions"));
		assertFalse(card.has("selectionBehavior"));
		assertFalse(card.has("overrideReasons"));
	}

	/** Verify one suggestion per generated request, depth first, each a create of a draft for the patient. */
	@Test
	void suggestions() {
		RequestGroup.RequestGroupActionComponent top = actionWith("Order tests", null);
		top.addAction(actionWith("Lab A", serviceRequest("sr1")));
		top.addAction(actionWith(null, serviceRequest("sr2")));
		group.addAction(top);
		ObjectNode card = run().get(0);
		JsonNode suggestions = card.get("suggestions");
		assertEquals(List.of("Lab A", "ServiceRequest"), texts(suggestions, "label"));
		assertEquals("any", card.get("selectionBehavior").asText());
		assertNotEquals(suggestions.get(0).get("uuid"), suggestions.get(1).get("uuid"));
		assertNotEquals(card.get("uuid"), suggestions.get(0).get("uuid"));
		JsonNode action = suggestions.get(0).at("/actions/0");
		assertTrue(suggestions.get(0).get("isRecommended").asBoolean());
		assertEquals("create", action.get("type").asText());
		assertEquals("Draft ServiceRequest: Lab A", action.get("description").asText());
		JsonNode draft = action.get("resource");
		assertEquals("ServiceRequest", draft.get("resourceType").asText());
		assertFalse(draft.has("id") || draft.has("meta"), draft.toString());
		assertEquals("draft", draft.get("status").asText());
		assertEquals("proposal", draft.get("intent").asText());
		assertEquals("{\"reference\":\"Patient/p1\"}", draft.get("subject").toString());
		assertEquals(List.of("http://example.org/kept"), texts(draft.get("extension"), "url"));
	}

	/** Verify that a NutritionOrder names the patient in patient (it has no subject). */
	@Test
	void nutritionOrderPatient() {
		NutritionOrder no = new NutritionOrder();
		no.setId("no1");
		no.setPatient(new Reference("Patient/placeholder"));
		group.addAction(actionWith("Diet", no));
		JsonNode draft = run().get(0).at("/suggestions/0/actions/0/resource");
		assertEquals("Patient/p1", draft.at("/patient/reference").asText());
		assertFalse(draft.has("subject"));
	}

	/** Verify that an uncoded CommunicationRequest draft gets its ActivityDefinition's code as category. */
	@Test
	void communicationRequestCategory() {
		ActivityDefinition ad = new ActivityDefinition();
		ad.setCode(new CodeableConcept().addCoding(new Coding("http://snomed.info/sct", "306206005", "Referral")));
		activities.put("refer", ad);
		PlanDefinition.PlanDefinitionActionComponent planned = plan.addAction();
		planned.setId("act1");
		planned.setDefinition(new CanonicalType(BASE + "/ActivityDefinition/refer|1.0"));
		CommunicationRequest cr = new CommunicationRequest();
		cr.setId("cr1");
		RequestGroup.RequestGroupActionComponent a = actionWith("Refer", cr);
		a.setId("act1");
		group.addAction(a);
		JsonNode draft = run().get(0).at("/suggestions/0/actions/0/resource");
		assertEquals("306206005", draft.at("/category/0/coding/0/code").asText());
	}

	/** Verify that the override reasons are the stored CodeSystem's concepts, under its canonical url. */
	@Test
	void overrideReasonsFromTheCodeSystem() {
		codeSystems.put(SYSTEM, codeSystem("too-late", "Too late", "other", "Something else"));
		group.addAction(actionWith("Order", null).addAction(actionWith("Lab", serviceRequest("sr1"))));
		JsonNode reasons = run().get(0).get("overrideReasons");
		assertEquals(List.of("too-late", "other"), texts(reasons, "code"));
		assertEquals(List.of("Too late", "Something else"), texts(reasons, "display"));
		assertEquals(List.of(SYSTEM, SYSTEM), texts(reasons, "system"));
	}

	/** Verify that without the stored CodeSystem the cards still offer the package's three reasons. */
	@Test
	void overrideReasonsFallBack() {
		group.addAction(actionWith("Order", null).addAction(actionWith("Lab", serviceRequest("sr1"))));
		JsonNode reasons = run().get(0).get("overrideReasons");
		assertEquals(List.of("already-addressed", "patient-declined", "not-clinically-appropriate"), texts(reasons, "code"));
		assertEquals(List.of(SYSTEM, SYSTEM, SYSTEM), texts(reasons, "system"));
	}
}
