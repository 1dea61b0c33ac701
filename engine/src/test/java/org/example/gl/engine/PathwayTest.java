package org.example.gl.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.ZonedDateTime;
import java.util.List;
import java.util.Map;
import org.hl7.fhir.r4.model.ActivityDefinition;
import org.hl7.fhir.r4.model.CanonicalType;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.CommunicationRequest;
import org.hl7.fhir.r4.model.Condition;
import org.hl7.fhir.r4.model.Dosage;
import org.hl7.fhir.r4.model.Expression;
import org.hl7.fhir.r4.model.MedicationRequest;
import org.hl7.fhir.r4.model.Patient;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.hl7.fhir.r4.model.PlanDefinition.PlanDefinitionActionComponent;
import org.hl7.fhir.r4.model.Resource;
import org.hl7.fhir.r4.model.ServiceRequest;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.opencds.cqf.cql.engine.runtime.Code;

/** The core on a small library and plan: conditions, dynamic texts, drafts, CQL parameters, value sets. */
class PathwayTest {
	private static final String VS = "http://example.org/ValueSet/test-conditions";
	private static final String CQL = """
			library Test version '1.0.0'
			using FHIR version '4.0.1'
			include FHIRHelpers version '4.0.1' called FHIRHelpers
			valueset "Test Conditions": 'http://example.org/ValueSet/test-conditions'
			parameter "Threshold" Integer default 1
			context Patient
			define "Count": Count([Condition: "Test Conditions"])
			define "Applies": "Count" >= "Threshold"
			define "Needs Drug": "Count" >= 2
			define "Never": null as Boolean
			define "Card Title": 'Seen ' + ToString("Count") + ' condition(s)'
			define "Card Detail": 'as of ' + ToString(date from Now())
			""";

	private static Knowledge knowledge;

	@BeforeAll
	static void load() {
		ActivityDefinition order = new ActivityDefinition();
		order.setId("Order");
		order.setUrl("http://example.org/ActivityDefinition/Order");
		order.setKind(ActivityDefinition.ActivityDefinitionKind.SERVICEREQUEST);
		order.setCode(new CodeableConcept().setText("a test"));
		order.setDoNotPerform(false);
		ActivityDefinition drug = new ActivityDefinition();
		drug.setId("Drug");
		drug.setKind(ActivityDefinition.ActivityDefinitionKind.MEDICATIONREQUEST);
		drug.setProduct(new CodeableConcept().setText("a drug"));
		drug.addDosage(new Dosage().setText("the prescriber's"));
		ActivityDefinition message = new ActivityDefinition();
		message.setId("Message");
		message.setKind(ActivityDefinition.ActivityDefinitionKind.COMMUNICATIONREQUEST);
		message.setCode(new CodeableConcept().setText("Hello"));

		PlanDefinition plan = new PlanDefinition();
		plan.setId("Rec");
		plan.addLibrary("Library/Test");
		PlanDefinitionActionComponent top = plan.addAction().setTitle("static title").setDescription("static detail");
		top.setId("R");
		top.setPriority(PlanDefinition.RequestPriority.ROUTINE);
		top.addCondition().setKind(PlanDefinition.ActionConditionKind.APPLICABILITY).setExpression(identifier("Applies"));
		top.addDynamicValue().setPath("action.title").setExpression(identifier("Card Title"));
		top.addDynamicValue().setPath("action.description").setExpression(identifier("Card Detail"));
		top.addAction().setTitle("Order").setDefinition(new CanonicalType("ActivityDefinition/Order")).setId("R-order");
		PlanDefinitionActionComponent drugAction = top.addAction().setTitle("Drug")
				.setDefinition(new CanonicalType("ActivityDefinition/Drug"));
		drugAction.setId("R-drug");
		drugAction.addCondition().setKind(PlanDefinition.ActionConditionKind.APPLICABILITY)
				.setExpression(identifier("Needs Drug"));
		top.addAction().setTitle("Message").setDefinition(new CanonicalType("ActivityDefinition/Message")).setId("R-msg");
		PlanDefinitionActionComponent never = top.addAction().setTitle("Never");
		never.setId("R-never");
		never.addCondition().setKind(PlanDefinition.ActionConditionKind.APPLICABILITY)
				.setExpression(identifier("Never"));
		// the pathway: its own gate ("Applies" of the same library), then the recommendation it reaches
		PlanDefinition pathway = new PlanDefinition();
		pathway.setId("Path");
		pathway.addLibrary("Library/Test");
		pathway.getType().addCoding().setSystem("http://terminology.hl7.org/CodeSystem/plan-definition-type")
				.setCode("clinical-protocol");
		PlanDefinitionActionComponent gate = pathway.addAction();
		gate.addCondition().setKind(PlanDefinition.ActionConditionKind.APPLICABILITY)
				.setExpression(identifier("Needs Drug"));
		gate.addAction().setDefinition(new CanonicalType("PlanDefinition/Rec"));
		knowledge = Knowledge.compile(
				List.of(CQL),
				new org.cqframework.cql.cql2elm.CqlCompilerOptions(),
				Map.of(VS, List.of(new Code().withSystem("http://snomed.info/sct").withCode("1"))),
				List.of(plan, pathway),
				List.of(order, drug, message));
	}

	private static Expression identifier(String define) {
		return new Expression().setLanguage("text/cql-identifier").setExpression(define);
	}

	private static List<Resource> patient(int conditions) {
		Patient p = new Patient();
		p.setId("p1");
		List<Resource> out = new java.util.ArrayList<>(List.of(p));
		for (int i = 0; i < conditions; i++) {
			Condition c = new Condition();
			c.setId("c" + i);
			c.getCode().addCoding().setSystem("http://snomed.info/sct").setCode("1");
			c.getSubject().setReference("Patient/p1");
			out.add(c);
		}
		Condition other = new Condition();
		other.setId("other");
		other.getCode().addCoding().setSystem("http://snomed.info/sct").setCode("2");
		out.add(other);
		return out;
	}

	private static Evaluator.Request at(String time, Map<String, Object> parameters) {
		return new Evaluator.Request(ZonedDateTime.parse(time), parameters);
	}

	@Test
	void appliesWithTextsAndDrafts() throws Exception {
		Evaluator ev = new Evaluator(knowledge);
		assertEquals("p1", ev.load(patient(2)));
		List<Pathway.Recommendation> recs = Pathway.recommend(ev, List.of("Rec"), at("2026-06-01T12:00:00Z", Map.of()));
		assertEquals(1, recs.size());
		Pathway.Action card = recs.get(0).actions().get(0);
		assertEquals("Seen 2 condition(s)", card.title());
		assertEquals("as of 2026-06-01", card.description());
		assertEquals("routine", card.priority());
		assertEquals(List.of("R-order", "R-drug", "R-msg"), card.actions().stream().map(Pathway.Action::id).toList());

		ServiceRequest order = (ServiceRequest) card.actions().get(0).resource();
		assertEquals(ServiceRequest.ServiceRequestStatus.DRAFT, order.getStatus());
		assertEquals(ServiceRequest.ServiceRequestIntent.PROPOSAL, order.getIntent());
		assertEquals("Patient/p1", order.getSubject().getReference());
		assertEquals("a test", order.getCode().getText());
		assertEquals("http://example.org/ActivityDefinition/Order", order.getInstantiatesCanonical().get(0).getValue());
		MedicationRequest drug = (MedicationRequest) card.actions().get(1).resource();
		assertEquals("a drug", drug.getMedicationCodeableConcept().getText());
		assertEquals("the prescriber's", drug.getDosageInstructionFirstRep().getText());
		CommunicationRequest msg = (CommunicationRequest) card.actions().get(2).resource();
		assertEquals("Hello", msg.getPayloadFirstRep().getContentStringType().getValue());
		assertNull(card.resource());
	}

	@Test
	void conditionsAndParametersDecide() throws Exception {
		Evaluator ev = new Evaluator(knowledge);
		ev.load(patient(0));
		assertTrue(Pathway.recommend(ev, List.of("Rec"), at("2026-06-01T12:00:00Z", Map.of())).isEmpty());
		// the CQL parameter from the request, not the library's default, decides
		assertEquals(1, Pathway.recommend(ev, List.of("Rec"), at("2026-06-01T12:00:00Z", Map.of("Threshold", 0))).size());
		ev.load(patient(1));
		List<Pathway.Recommendation> one = Pathway.recommend(ev, List.of("Rec"), at("2026-06-01T12:00:00Z", Map.of()));
		assertEquals(List.of("R-order", "R-msg"),
				one.get(0).actions().get(0).actions().stream().map(Pathway.Action::id).toList());
	}

	@Test
	void theWalkStopsAtThePathwaysGate() throws Exception {
		Evaluator ev = knowledge.evaluator();
		ev.load(patient(1)); // "Applies" (the recommendation) but not "Needs Drug" (the pathway's gate)
		assertTrue(Pathway.walk(ev, at("2026-06-01T12:00:00Z", Map.of())).isEmpty());
		ev.load(patient(2));
		List<Pathway.Recommendation> walked = Pathway.walk(ev, at("2026-06-01T12:00:00Z", Map.of()));
		assertEquals(List.of("Rec"), walked.stream().map(r -> r.plan().getIdElement().getIdPart()).toList());
		assertTrue(ev == knowledge.evaluator(), "one warm evaluator per thread");
	}

	@Test
	void valueSetsAndOptionsAsTheToolingWritesThem() throws Exception {
		com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
		Map<String, List<Code>> vs = Knowledge.valueSets(json.readTree(
				"{\"u\": {\"1\": [{\"system\": \"s\", \"code\": \"a\"}], \"2\": [{\"system\": \"s\", \"code\": \"a\"},"
						+ " {\"system\": \"s\", \"code\": \"b\"}]}}"));
		assertEquals(List.of("a", "b"), vs.get("u").stream().map(Code::getCode).toList());
		var options = Knowledge.compilerOptions(json.readTree(
				"{\"options\": [\"EnableLocators\"], \"signatureLevel\": \"All\", \"compatibilityLevel\": \"1.5\"}"));
		assertTrue(options.getOptions().contains(org.cqframework.cql.cql2elm.CqlCompilerOptions.Options.EnableLocators));
		assertEquals("1.5", options.getCompatibilityLevel());
		assertEquals("Quoted Name", Knowledge.libraryName("// x\nlibrary \"Quoted Name\" version '1'"));
	}

	@Test
	void unknownPlanAndLibraryErrorsNameThem() {
		Evaluator ev = new Evaluator(knowledge);
		ev.load(patient(1));
		IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
				() -> Pathway.recommend(ev, List.of("Nope"), at("2026-06-01T12:00:00Z", Map.of())));
		assertTrue(e.getMessage().contains("PlanDefinition/Nope"), e.getMessage());
		IllegalStateException bad = assertThrows(IllegalStateException.class, () -> Knowledge.compile(
				List.of("library Bad version '1'\ndefine X: 1 +"), new org.cqframework.cql.cql2elm.CqlCompilerOptions(),
				Map.of(), List.of(), List.of()));
		assertTrue(bad.getMessage().startsWith("CQL library Bad"), bad.getMessage());
	}
}
