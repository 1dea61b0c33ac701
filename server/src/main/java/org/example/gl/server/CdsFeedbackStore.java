package org.example.gl.server;

import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.api.dao.IFhirResourceDao;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.searchparam.SearchParameterMap;
import ca.uhn.fhir.rest.api.server.SystemRequestDetails;
import ca.uhn.fhir.rest.param.TokenParam;
import com.fasterxml.jackson.databind.JsonNode;
import java.util.Date;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.hl7.fhir.r4.model.Basic;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.CodeType;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.DateTimeType;
import org.hl7.fhir.r4.model.Extension;
import org.hl7.fhir.r4.model.Identifier;
import org.hl7.fhir.r4.model.StringType;

/**
 * Durable memory of the cards this service sent and of the feedback it received, as FHIR {@code Basic} resources in
 * the server's own database (so it survives a restart and is shared by every node on one database).
 *
 * <p>Why remember cards rather than make their uuids verifiable (an HMAC in the uuid): feedback must prove that an
 * {@code acceptedSuggestions} id was sent <em>on that card</em>; a MAC would need a secret shared by every node and
 * kept out of the FHIR API, and still could not tell which suggestions a card carried without storing them. One
 * {@code Basic} per call (every card's uuid as an identifier, its suggestion uuids in an extension) costs one insert
 * per call that has cards, and nothing about the patient is kept (no subject, no resources).
 */
public class CdsFeedbackStore {
	/** Basic.code system of this server's records (not clinical; never part of the package). */
	public static final String RECORD_SYSTEM = "http://example.org/fhir/gl-treatment/cds-record";
	public static final String EXT = "http://example.org/fhir/gl-treatment/StructureDefinition/cds-";
	private static final String URI_SYSTEM = "urn:ietf:rfc:3986";

	private final DaoRegistry daos;

	public CdsFeedbackStore(DaoRegistry daos) {
		this.daos = daos;
	}

	private IFhirResourceDao<Basic> dao() {
		return daos.getResourceDao(Basic.class);
	}

	/** Remembers the cards of one call of {@code service} (uuid and suggestion uuids); nothing when there are none. */
	public void recordCards(String service, JsonNode cards) {
		if (cards == null || cards.isEmpty()) {
			return;
		}
		Basic b = new Basic();
		b.setCode(new CodeableConcept(new Coding(RECORD_SYSTEM, "cards", "CDS cards sent")));
		b.setCreated(new Date());
		b.addExtension(EXT + "service", new StringType(service));
		for (JsonNode card : cards) {
			String uuid = card.path("uuid").asText();
			b.addIdentifier(new Identifier().setSystem(URI_SYSTEM).setValue("urn:uuid:" + uuid));
			Extension c = b.addExtension().setUrl(EXT + "card");
			c.addExtension("uuid", new StringType(uuid));
			for (JsonNode s : card.path("suggestions")) {
				c.addExtension("suggestion", new StringType(s.path("uuid").asText()));
			}
		}
		dao().create(b, new SystemRequestDetails());
	}

	/** The suggestion uuids of card {@code uuid} as sent by {@code service}, or null when it never sent that card. */
	public Set<String> sentSuggestions(String service, String uuid) {
		SearchParameterMap map = SearchParameterMap.newSynchronous()
				.add("code", new TokenParam(RECORD_SYSTEM, "cards"))
				.add("identifier", new TokenParam(URI_SYSTEM, "urn:uuid:" + uuid));
		for (var resource : dao().search(map, new SystemRequestDetails()).getAllResources()) {
			Basic b = (Basic) resource;
			Extension svc = b.getExtensionByUrl(EXT + "service");
			if (svc == null || !service.equals(svc.getValue().primitiveValue())) {
				continue;
			}
			for (Extension c : b.getExtensionsByUrl(EXT + "card")) {
				Extension id = c.getExtensionByUrl("uuid");
				if (id != null && uuid.equals(id.getValue().primitiveValue())) {
					Set<String> out = new HashSet<>();
					c.getExtensionsByUrl("suggestion").forEach(s -> out.add(s.getValue().primitiveValue()));
					return out;
				}
			}
		}
		return null;
	}

	/** One checked feedback item to store. */
	public record Item(
			String card, String outcome, List<String> accepted, Coding reason, String comment, String timestamp) {}

	/** Stores every item of one feedback request in one transaction (all or nothing). */
	public void recordFeedback(String service, List<Item> items) {
		Bundle tx = new Bundle().setType(Bundle.BundleType.TRANSACTION);
		for (Item item : items) {
			Basic b = new Basic();
			b.setCode(new CodeableConcept(new Coding(RECORD_SYSTEM, "feedback", "CDS card feedback")));
			b.setCreated(new Date());
			b.addExtension(EXT + "service", new StringType(service));
			b.addExtension(EXT + "card", new StringType(item.card()));
			b.addExtension(EXT + "outcome", new CodeType(item.outcome()));
			item.accepted().forEach(s -> b.addExtension(EXT + "accepted-suggestion", new StringType(s)));
			if (item.reason() != null) {
				b.addExtension(EXT + "override-reason", item.reason());
			}
			if (item.comment() != null) {
				b.addExtension(EXT + "user-comment", new StringType(item.comment()));
			}
			b.addExtension(EXT + "outcome-timestamp", new DateTimeType(item.timestamp()));
			tx.addEntry().setResource(b).getRequest().setMethod(Bundle.HTTPVerb.POST).setUrl("Basic");
		}
		@SuppressWarnings("unchecked")
		IFhirSystemDao<Bundle, ?> system = (IFhirSystemDao<Bundle, ?>) daos.getSystemDao();
		system.transaction(new SystemRequestDetails(), tx);
	}
}
