package org.example.gl.common;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.hl7.fhir.r4.model.CarePlan;
import org.hl7.fhir.r4.model.OperationOutcome;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.RequestGroup;
import org.junit.jupiter.api.Test;

/** Engine messages read as Python's engine_errors reads them. */
class EngineMessagesTest {
	private static OperationOutcome outcome(String id, String... diagnostics) {
		OperationOutcome oo = new OperationOutcome();
		oo.setId(id);
		for (String d : diagnostics) {
			oo.addIssue().setSeverity(OperationOutcome.IssueSeverity.ERROR).setDiagnostics(d);
		}
		return oo;
	}

	/** Verify that a CarePlan without outcomes has no messages (a RequestGroup is not one). */
	@Test
	void noOutcomesNoMessages() {
		CarePlan cp = new CarePlan();
		cp.addContained(new RequestGroup().setId("rg"));
		assertEquals(List.of(), EngineMessages.of(cp));
	}

	/** Verify that outcomes named by cqf-messages come first, then any other contained outcome, each once. */
	@Test
	void referencedFirstThenTheRest() {
		CarePlan cp = new CarePlan();
		cp.addContained(outcome("other", "unreferenced"));
		cp.addContained(outcome("oo1", "first", "second"));
		cp.addExtension(EngineMessages.CQF_MESSAGES, new Reference("#oo1"));
		assertEquals(List.of("first", "second", "unreferenced"), EngineMessages.of(cp));
	}

	/** Verify that an issue without diagnostics counts, as an empty message, so the result still reads as failed. */
	@Test
	void issueWithoutDiagnostics() {
		CarePlan cp = new CarePlan();
		OperationOutcome oo = new OperationOutcome();
		oo.setId("oo");
		oo.addIssue().setSeverity(OperationOutcome.IssueSeverity.ERROR);
		cp.addContained(oo);
		cp.addExtension(EngineMessages.CQF_MESSAGES, new Reference("#oo"));
		assertEquals(List.of(""), EngineMessages.of(cp));
	}

	/** Verify that a cqf-messages extension pointing at nothing adds nothing. */
	@Test
	void danglingReference() {
		CarePlan cp = new CarePlan();
		cp.addExtension(EngineMessages.CQF_MESSAGES, new Reference("#missing"));
		assertEquals(List.of(), EngineMessages.of(cp));
	}
}
