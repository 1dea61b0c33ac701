package org.example.gl.engine;

import java.util.List;
import org.hl7.fhir.r4.model.ActivityDefinition;
import org.hl7.fhir.r4.model.CanonicalType;
import org.hl7.fhir.r4.model.CommunicationRequest;
import org.hl7.fhir.r4.model.MedicationRequest;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.Resource;
import org.hl7.fhir.r4.model.ServiceRequest;
import org.hl7.fhir.r4.model.StringType;

/**
 * The draft request an ActivityDefinition describes, built the way clinical reasoning's R4 ActivityDefinition
 * {@code $apply} resolvers build it (ServiceRequest: code, bodySite; MedicationRequest: medication from the
 * product, dosageInstruction from the dosage; CommunicationRequest: the code's text as the payload; each:
 * instantiatesCanonical from the url and version, doNotPerform), with what a CDS suggestion needs fixed: {@code status}
 * draft, {@code intent} proposal, {@code subject} the patient. Only the kinds the package uses are built; another
 * kind, or an ActivityDefinition with its own dynamic values, is an error naming it rather than a partial resource.
 */
final class Activities {
	private Activities() {}

	/** The draft resource of {@code definition} for {@code Patient/patientId}. */
	static Resource draft(ActivityDefinition definition, String patientId) {
		if (definition.hasDynamicValue()) {
			throw new IllegalStateException("ActivityDefinition/" + definition.getIdElement().getIdPart()
					+ " has dynamic values, which the evaluation core does not apply; evaluate it with $apply");
		}
		Reference subject = new Reference("Patient/" + patientId);
		List<CanonicalType> instantiates = definition.hasUrl()
				? List.of(new CanonicalType(definition.getUrl()
						+ (definition.hasVersion() ? "|" + definition.getVersion() : "")))
				: List.of();
		String kind = definition.hasKind() ? definition.getKind().toCode() : "(none)";
		switch (kind) {
			case "ServiceRequest" -> {
				ServiceRequest r = new ServiceRequest();
				r.setStatus(ServiceRequest.ServiceRequestStatus.DRAFT);
				r.setIntent(ServiceRequest.ServiceRequestIntent.PROPOSAL);
				r.setSubject(subject);
				r.setInstantiatesCanonical(instantiates);
				if (definition.hasCode()) {
					r.setCode(definition.getCode().copy());
				}
				definition.getBodySite().forEach(b -> r.addBodySite(b.copy()));
				if (definition.hasDoNotPerform()) {
					r.setDoNotPerform(definition.getDoNotPerform());
				}
				return r;
			}
			case "MedicationRequest" -> {
				MedicationRequest r = new MedicationRequest();
				r.setStatus(MedicationRequest.MedicationRequestStatus.DRAFT);
				r.setIntent(MedicationRequest.MedicationRequestIntent.PROPOSAL);
				r.setSubject(subject);
				r.setInstantiatesCanonical(instantiates);
				if (definition.hasProduct()) {
					r.setMedication(definition.getProduct().copy());
				}
				definition.getDosage().forEach(d -> r.addDosageInstruction(d.copy()));
				if (definition.hasDoNotPerform()) {
					r.setDoNotPerform(definition.getDoNotPerform());
				}
				return r;
			}
			case "CommunicationRequest" -> {
				CommunicationRequest r = new CommunicationRequest();
				r.setStatus(CommunicationRequest.CommunicationRequestStatus.DRAFT);
				r.setSubject(subject);
				if (definition.hasDoNotPerform()) {
					r.setDoNotPerform(definition.getDoNotPerform());
				}
				if (definition.hasCode() && definition.getCode().hasText()) {
					r.addPayload().setContent(new StringType(definition.getCode().getText()));
				}
				return r;
			}
			default -> throw new IllegalStateException("ActivityDefinition/" + definition.getIdElement().getIdPart()
					+ " has kind " + kind + ", which the evaluation core does not build");
		}
	}
}
