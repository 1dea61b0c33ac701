package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The merge of prefetch searches that differ only in their code list ({@code CdsEvaluator.mergedByCode}), which lets
 * the pathway service read a patient with one search per type instead of one per template.
 */
class PrefetchMergeTest {
	private static List<String> merged(String... queries) {
		return CdsEvaluator.mergedByCode(List.of(queries));
	}

	/** Verify that searches differing only in code become one search with the union of the codes, in first-seen order. */
	@Test
	void unionOfCodes() {
		assertEquals(
				List.of("Condition?patient=p1&code=http://snomed.info/sct|1,http://snomed.info/sct|2,http://snomed.info/sct|3"),
				merged("Condition?patient=p1&code=http://snomed.info/sct|1,http://snomed.info/sct|2",
						"Condition?patient=p1&code=http://snomed.info/sct|2,http://snomed.info/sct|3"));
	}

	/** Verify that a search of the group without a code filter makes the merged one code-free, in either order. */
	@Test
	void codeFreeWins() {
		assertEquals(List.of("Condition?patient=p1"), merged("Condition?patient=p1&code=a", "Condition?patient=p1"));
		assertEquals(List.of("Condition?patient=p1"), merged("Condition?patient=p1", "Condition?patient=p1&code=a"));
	}

	/** Verify that searches with other differing parameters, or of other types, stay apart, in first-seen order. */
	@Test
	void otherParametersStayApart() {
		assertEquals(
				List.of("Observation?patient=p1&status=final&code=a", "Condition?patient=p1&code=b",
						"Observation?patient=p1&code=c"),
				merged("Observation?patient=p1&status=final&code=a", "Condition?patient=p1&code=b",
						"Observation?patient=p1&code=c"));
	}

	/** Verify that the code list moves to the end and the other parameters keep their order. */
	@Test
	void codeMovesToTheEnd() {
		assertEquals(List.of("MedicationRequest?patient=p1&_include=MedicationRequest:medication&code=x"),
				merged("MedicationRequest?code=x&patient=p1&_include=MedicationRequest:medication"));
	}

	/** Verify that only the first code parameter is the code list: a second one is an ordinary parameter (AND). */
	@Test
	void onlyTheFirstCodeParameterMerges() {
		assertEquals(List.of("Condition?patient=p1&code=b&code=a,c"),
				merged("Condition?patient=p1&code=a&code=b", "Condition?patient=p1&code=c&code=b"));
	}

	/** Verify that reads are kept as they are, each once, among the searches in first-seen order. */
	@Test
	void readsOnce() {
		assertEquals(List.of("Patient/p1", "Condition?patient=p1&code=a,b"),
				merged("Patient/p1", "Condition?patient=p1&code=a", "Patient/p1", "Condition?patient=p1&code=b,a"));
	}

	/** Verify that nothing in gives nothing out. */
	@Test
	void empty() {
		assertEquals(List.of(), merged());
	}
}
