package org.example.gl.common;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.junit.jupiter.api.Test;

/** The pathway rule, as Python's is_pathway: type clinical-protocol in the plan-definition-type system. */
class PathwaysTest {
	private static PlanDefinition typed(String system, String code) {
		PlanDefinition p = new PlanDefinition();
		p.setType(new CodeableConcept().addCoding(new Coding(system, code, null)));
		return p;
	}

	/** Verify that a clinical-protocol is a pathway, also when it has other codings besides. */
	@Test
	void clinicalProtocolIsAPathway() {
		assertTrue(Pathways.isPathway(typed(Pathways.PLAN_TYPE_SYSTEM, "clinical-protocol")));
		PlanDefinition both = typed("http://example.org/local", "x");
		both.getType().addCoding(new Coding(Pathways.PLAN_TYPE_SYSTEM, "clinical-protocol", null));
		assertTrue(Pathways.isPathway(both));
	}

	/** Verify that a recommendation (eca-rule), an untyped plan, another system's code and null are not pathways. */
	@Test
	void everythingElseIsNot() {
		assertFalse(Pathways.isPathway(typed(Pathways.PLAN_TYPE_SYSTEM, "eca-rule")));
		assertFalse(Pathways.isPathway(typed("http://example.org/other", "clinical-protocol")));
		assertFalse(Pathways.isPathway(new PlanDefinition()));
		assertFalse(Pathways.isPathway(null));
	}

	/** Verify that the rule looks at the type only: a plan whose actions look like a pathway's is still not one. */
	@Test
	void actionsDoNotMakeAPathway() {
		PlanDefinition p = typed(Pathways.PLAN_TYPE_SYSTEM, "eca-rule");
		p.addAction().setDefinition(new org.hl7.fhir.r4.model.CanonicalType("http://x/PlanDefinition/R1"));
		assertFalse(Pathways.isPathway(p));
	}
}
