package org.example.gl.server;

import java.util.List;
import java.util.function.Function;
import org.hl7.fhir.r4.model.PlanDefinition;

/**
 * Whether a recommendation's CDS service is offered (project safety rule 17). An <em>informational</em>
 * recommendation, one whose PlanDefinition proposes no activity (no action, at any depth, references an
 * ActivityDefinition: R6, the prognosis card), would put a card that asks nothing of the clinician in front of them
 * at every chart opening, which is alert fatigue. Such services are offered only when
 * {@code guideline.cds.informational-cards} is true; by default they are neither listed in discovery, nor run by the
 * pathway service, nor callable. {@code recommend}, {@code $apply} and the rendered site keep the recommendation:
 * this is about CDS cards only. The Python tests read the same rule from the package
 * ({@code tests/support/cdscards.py}), as does {@code guideline conformance} ({@code guideline.core.fhir}).
 */
public class InformationalCards {
	private final boolean offerInformational;
	private final Function<String, PlanDefinition> plans;

	/**
	 * {@code offerInformational}: the {@code guideline.cds.informational-cards} setting; {@code plans}: the stored
	 * PlanDefinition with a service's id (the service id is the PlanDefinition id), or null.
	 */
	public InformationalCards(boolean offerInformational, Function<String, PlanDefinition> plans) {
		this.offerInformational = offerInformational;
		this.plans = plans;
	}

	/** True when the plan's actions, at any depth, reference no ActivityDefinition: it only informs. */
	public static boolean informational(PlanDefinition plan) {
		return !proposes(plan.getAction());
	}

	private static boolean proposes(List<PlanDefinition.PlanDefinitionActionComponent> actions) {
		for (PlanDefinition.PlanDefinitionActionComponent a : actions) {
			String ref = a.hasDefinitionCanonicalType() ? a.getDefinitionCanonicalType().getValue() : null;
			if ((ref != null && ref.contains("ActivityDefinition/")) || proposes(a.getAction())) {
				return true;
			}
		}
		return false;
	}

	/**
	 * Whether the CDS service {@code serviceId} is offered: always when informational cards are on, or when no
	 * PlanDefinition of that id is stored (the registry then decides), else when its plan proposes something.
	 */
	public boolean offered(String serviceId) {
		if (offerInformational) {
			return true;
		}
		PlanDefinition plan = plans.apply(serviceId);
		return plan == null || !informational(plan);
	}

	/** The setting, for messages. */
	public boolean offerInformational() {
		return offerInformational;
	}
}
