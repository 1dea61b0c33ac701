package org.example.gl.common;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.List;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.Condition;
import org.hl7.fhir.r4.model.Patient;
import org.junit.jupiter.api.Test;

/** The three forms of the collection Bundle agree: same shape, entries in the given order. */
class CollectionBundleTest {
	private final ObjectMapper mapper = new ObjectMapper();

	/** Verify that JSON texts are joined into a collection Bundle, in order, without being re-encoded. */
	@Test
	void joinsJsonTexts() throws Exception {
		String text = CollectionBundle.ofJsonTexts(List.of("{\"resourceType\":\"Patient\",\"id\":\"p\"}", "{\"resourceType\":\"Condition\"}"));
		assertEquals("{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\","
				+ "\"id\":\"p\"}},{\"resource\":{\"resourceType\":\"Condition\"}}]}", text);
		JsonNode parsed = mapper.readTree(text);
		assertEquals(2, parsed.get("entry").size());
	}

	/** Verify that no resources make a Bundle with an empty entry list (the engines accept it as "no data"). */
	@Test
	void emptyIsAnEmptyEntryList() {
		assertEquals("{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[]}", CollectionBundle.ofJsonTexts(List.of()));
		assertEquals(0, CollectionBundle.ofJson(mapper, List.of()).get("entry").size());
		assertEquals(0, CollectionBundle.of(List.of()).getEntry().size());
	}

	/** Verify that the Jackson form holds the given nodes, in order, and the same text as the joined form. */
	@Test
	void jacksonFormMatchesTheTextForm() throws Exception {
		ObjectNode patient = (ObjectNode) mapper.readTree("{\"resourceType\":\"Patient\",\"id\":\"p\"}");
		ObjectNode condition = (ObjectNode) mapper.readTree("{\"resourceType\":\"Condition\"}");
		ObjectNode bundle = CollectionBundle.ofJson(mapper, List.of(patient, condition));
		assertSame(patient, bundle.get("entry").get(0).get("resource"));
		assertEquals(mapper.readTree(CollectionBundle.ofJsonTexts(List.of(patient.toString(), condition.toString()))), bundle);
	}

	/** Verify that the model form is a collection Bundle of the given resources, in order. */
	@Test
	void modelForm() {
		Patient p = new Patient();
		Condition c = new Condition();
		Bundle bundle = CollectionBundle.of(List.of(p, c));
		assertEquals(Bundle.BundleType.COLLECTION, bundle.getType());
		assertSame(p, bundle.getEntry().get(0).getResource());
		assertSame(c, bundle.getEntry().get(1).getResource());
	}
}
