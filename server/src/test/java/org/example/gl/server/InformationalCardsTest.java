package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashMap;
import java.util.Map;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.junit.jupiter.api.Test;

/** Which recommendations' CDS services are offered (project safety rule 17): informational ones only when turned on. */
class InformationalCardsTest {
	private final Map<String, PlanDefinition> plans = new HashMap<>();

	private static PlanDefinition plan(String id) {
		PlanDefinition p = new PlanDefinition();
		p.setId(id);
		return p;
	}

	/** An R6-like plan: one card, no activity. */
	private static PlanDefinition prognosis() {
		PlanDefinition p = plan("GLR6Prognosis");
		p.addAction().setTitle("Prognosis").addAction().setTitle("a note, still no activity");
		return p;
	}

	/** An R2-like plan: the top action has no activity, its conditional sub-action does (relative canonical). */
	private static PlanDefinition drug() {
		PlanDefinition p = plan("GLR2Bromocriptine");
		p.addAction().setTitle("Consider bromocriptine").addAction().setDefinition(
				new org.hl7.fhir.r4.model.CanonicalType("ActivityDefinition/GLProposeBromocriptine"));
		return p;
	}

	/** Verify that a plan is informational exactly when no action at any depth references an ActivityDefinition. */
	@Test
	void informationalIsAPlanThatProposesNothing() {
		assertTrue(InformationalCards.informational(prognosis()));
		assertFalse(InformationalCards.informational(drug()));
		PlanDefinition versioned = plan("GLR3");
		versioned.addAction().setDefinition(new org.hl7.fhir.r4.model.CanonicalType(
				"http://example.org/fhir/gl/ActivityDefinition/GLProposeLevocarnitine|0.3.0"));
		assertFalse(InformationalCards.informational(versioned));
		assertTrue(InformationalCards.informational(plan("empty")));
	}

	/** Verify the default (off): an informational service is not offered, the others and unknown ids are. */
	@Test
	void offAnInformationalServiceIsNotOffered() {
		plans.put("GLR6Prognosis", prognosis());
		plans.put("GLR2Bromocriptine", drug());
		InformationalCards off = new InformationalCards(false, plans::get);
		assertFalse(off.offered("GLR6Prognosis"));
		assertTrue(off.offered("GLR2Bromocriptine"));
		assertTrue(off.offered("not-a-plan"), "an id without a stored plan is left to the service registry");
		assertFalse(off.offerInformational());
	}

	/** Verify that turned on, every service is offered, informational ones included. */
	@Test
	void onEveryServiceIsOffered() {
		plans.put("GLR6Prognosis", prognosis());
		InformationalCards on = new InformationalCards(true, plans::get);
		assertTrue(on.offered("GLR6Prognosis"));
		assertTrue(on.offered("GLR2Bromocriptine"));
	}
}
