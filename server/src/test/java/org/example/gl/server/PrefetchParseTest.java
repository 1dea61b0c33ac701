package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.hapi.fhir.cdshooks.module.CdsHooksObjectMapperFactory;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.List;
import org.example.gl.common.CollectionBundle;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.Observation;
import org.junit.jupiter.api.Test;

/**
 * The prefetch handed to HAPI's parser as the request's JSON tree ({@code CdsEvaluator.mergedData}) gives the same
 * resources as writing the merged Bundle to text and parsing that, which is what the server did before.
 */
class PrefetchParseTest {
	private static final FhirContext FHIR = FhirContext.forR4Cached();
	// the servlet's own mapper (HAPI's CDS Hooks one): it reads a JSON decimal as a double
	private static final ObjectMapper MAPPER = new CdsHooksObjectMapperFactory(FHIR).newMapper();
	private static final CdsEvaluator EVALUATOR = new CdsEvaluator(null, null, null, null, null, FHIR, MAPPER, "GLPathway", null);

	private static final String PREFETCH = """
			{"patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1990-02-03", "active": true},
			 "labs": {"resourceType": "Bundle", "type": "searchset", "entry": [
			   {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
			     "code": {"coding": [{"system": "http://loinc.org", "code": "2571-8"}]}, "subject": {"reference": "Patient/p1"},
			     "valueQuantity": {"value": 7.50, "unit": "mmol/L"},
			     "referenceRange": [{"low": {"value": 1e-7}, "high": {"value": 12345678.9}}],
			     "component": [
			       {"code": {"text": "a"}, "valueQuantity": {"value": 0.1}},
			       {"code": {"text": "b"}, "valueQuantity": {"value": 1.0E10}},
			       {"code": {"text": "c"}, "valueQuantity": {"value": -2.5e-3}},
			       {"code": {"text": "d"}, "valueQuantity": {"value": 1.2345678901234567890123}},
			       {"code": {"text": "e"}, "valueQuantity": {"value": 123456789012345678901234567890}},
			       {"code": {"text": "f"}, "valueInteger": 3},
			       {"code": {"text": "g"}, "valueQuantity": {"value": 5}}]}},
			   {"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "informational"}]}},
			   {"resource": {"resourceType": "Patient", "id": "p1", "gender": "female"}}]}}
			""";

	/** The former path: the merged Bundle written to text with the same mapper, parsed by HAPI from that text. */
	private static Bundle viaText(ObjectNode prefetch) throws Exception {
		List<com.fasterxml.jackson.databind.JsonNode> resources = new ArrayList<>();
		resources.add(prefetch.get("patient"));
		resources.add(prefetch.at("/labs/entry/0/resource"));
		return FHIR.newJsonParser().parseResource(Bundle.class,
				MAPPER.writeValueAsString(CollectionBundle.ofJson(MAPPER, resources)));
	}

	/** Verify that every value, decimals included (as text and as numbers), equals the former write-and-parse. */
	@Test
	void sameResourcesAsWriteAndParse() throws Exception {
		Bundle before = viaText((ObjectNode) MAPPER.readTree(PREFETCH));
		Bundle now = EVALUATOR.mergedData((ObjectNode) MAPPER.readTree(PREFETCH));
		assertEquals(FHIR.newJsonParser().encodeResourceToString(before), FHIR.newJsonParser().encodeResourceToString(now));
		assertEquals(2, now.getEntry().size()); // OperationOutcome dropped, Patient/p1 once
		Observation o = (Observation) now.getEntry().get(1).getResource();
		Observation p = (Observation) before.getEntry().get(1).getResource();
		assertEquals(p.getValueQuantity().getValueElement().getValueAsString(), o.getValueQuantity().getValueElement().getValueAsString());
		assertEquals(p.getValueQuantity().getValue(), o.getValueQuantity().getValue());
		for (int i = 0; i < o.getComponent().size(); i++) {
			var c = o.getComponent().get(i);
			var d = p.getComponent().get(i);
			if (c.hasValueQuantity()) {
				assertEquals(d.getValueQuantity().getValue(), c.getValueQuantity().getValue());
				assertEquals(d.getValueQuantity().getValueElement().getValueAsString(),
						c.getValueQuantity().getValueElement().getValueAsString());
			}
		}
		assertEquals(p.getReferenceRangeFirstRep().getLow().getValue(), o.getReferenceRangeFirstRep().getLow().getValue());
		assertEquals(p.getReferenceRangeFirstRep().getHigh().getValue(), o.getReferenceRangeFirstRep().getHigh().getValue());
	}

	/** Verify that a prefetch HAPI cannot read as R4 is still the 400 it was. */
	@Test
	void invalidFhirIs400() throws Exception {
		ObjectNode prefetch = (ObjectNode) MAPPER.readTree("""
				{"x": {"resourceType": "NoSuchType", "id": "1"}}""");
		CdsRequestError e = assertThrows(CdsRequestError.class, () -> EVALUATOR.mergedData(prefetch));
		assertEquals(400, e.status());
	}
}
