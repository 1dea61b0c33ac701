package org.example.gl.common;

import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.PlanDefinition;

/**
 * What a pathway is: a CPG PathwayDefinition, i.e. a PlanDefinition whose {@code type} carries the
 * plan-definition-type code {@code clinical-protocol}. The same rule as Python's {@code is_pathway}
 * ({@code guideline/core/fhir.py}), so the server follows exactly the nested pathways the Python tooling does; a
 * recommendation ({@code eca-rule}) is never one, whatever its actions look like.
 */
public final class Pathways {
	/** The code system of PlanDefinition.type (terminology.hl7.org). */
	public static final String PLAN_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/plan-definition-type";
	/** The plan type of a pathway. */
	public static final String PATHWAY_TYPE = "clinical-protocol";

	private Pathways() {}

	/** True when {@code plan} is a pathway (see the class comment); false for null. */
	public static boolean isPathway(PlanDefinition plan) {
		if (plan == null || !plan.hasType()) {
			return false;
		}
		for (Coding c : plan.getType().getCoding()) {
			if (PLAN_TYPE_SYSTEM.equals(c.getSystem()) && PATHWAY_TYPE.equals(c.getCode())) {
				return true;
			}
		}
		return false;
	}
}
