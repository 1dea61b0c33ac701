package org.example.gl.common;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import org.hl7.fhir.r4.model.CarePlan;
import org.hl7.fhir.r4.model.Extension;
import org.hl7.fhir.r4.model.OperationOutcome;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.Resource;

/**
 * The messages clinical reasoning's engine left on an {@code $apply} result: errors do not fail the call, they land
 * in contained OperationOutcomes, pointed to by {@code cqf-messages} extensions on the CarePlan. Read as Python's
 * {@code engine_errors} ({@code guideline/remote/apply.py}) reads them, so both sides call the same result failed:
 * the referenced OperationOutcomes first, then any other contained one (an outcome the engine attached without the
 * extension still means something went wrong), every issue's diagnostics ("" when it has none).
 */
public final class EngineMessages {
	/** The extension on the CarePlan that points at a contained OperationOutcome. */
	public static final String CQF_MESSAGES = "http://hl7.org/fhir/StructureDefinition/cqf-messages";

	private EngineMessages() {}

	/** Every issue's diagnostics of {@code carePlan}'s engine outcomes, in the order above; empty when it has none. */
	public static List<String> of(CarePlan carePlan) {
		Set<OperationOutcome> outcomes = new LinkedHashSet<>();
		for (Extension e : carePlan.getExtensionsByUrl(CQF_MESSAGES)) {
			String ref = e.getValue() instanceof Reference r && r.getReference() != null ? r.getReference() : "";
			for (Resource c : carePlan.getContained()) {
				if (c instanceof OperationOutcome oo && ref.equals("#" + c.getIdPart())) {
					outcomes.add(oo);
				}
			}
		}
		for (Resource c : carePlan.getContained()) {
			if (c instanceof OperationOutcome oo) {
				outcomes.add(oo);
			}
		}
		List<String> out = new ArrayList<>();
		for (OperationOutcome oo : outcomes) {
			oo.getIssue().forEach(i -> out.add(i.hasDiagnostics() ? i.getDiagnostics() : ""));
		}
		return out;
	}
}
