package org.example.gl.server;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import org.example.gl.common.FhirDates;
import org.hl7.fhir.r4.model.Coding;

/**
 * CDS Hooks 2.0 feedback ({@code POST {base}/cds-services/{id}/feedback}): every item is checked before anything is
 * stored. 400: the body is not {@code {"feedback": [...]}}, an item lacks {@code card}, a known {@code outcome}
 * (accepted, overridden) or {@code outcomeTimestamp}, an {@code acceptedSuggestions} id is not a suggestion uuid this
 * service sent on that card, or an override reason is not one the card offered. 404: the service never sent that card.
 */
public class CdsFeedback {
	private final CdsFeedbackStore store;
	private final OverrideReasons overrideReasons;

	/** Feedback stored in {@code store}, override reasons checked against {@code overrideReasons}. */
	public CdsFeedback(CdsFeedbackStore store, OverrideReasons overrideReasons) {
		this.store = store;
		this.overrideReasons = overrideReasons;
	}

	/** Where the feedback (and the cards it refers to) is kept. */
	public CdsFeedbackStore store() {
		return store;
	}

	/** Checks the whole body, then stores every item in one transaction. */
	public void handle(String service, JsonNode body) {
		JsonNode items = body == null ? null : body.get("feedback");
		if (items == null || !items.isArray() || items.isEmpty()) {
			throw new CdsRequestError(400, "the body must be {\"feedback\": [{card, outcome, outcomeTimestamp, ...}]} (CDS Hooks 2.0)");
		}
		List<CdsFeedbackStore.Item> checked = new ArrayList<>();
		for (int i = 0; i < items.size(); i++) {
			checked.add(item(service, items.get(i), "feedback[" + i + "]"));
		}
		store.recordFeedback(service, checked);
	}

	// Long: one item's fields checked in spec order, each failure naming the field
	private CdsFeedbackStore.Item item(String service, JsonNode f, String where) {
		if (!f.isObject()) {
			throw new CdsRequestError(400, where + " must be an object");
		}
		String card = text(f, "card", where);
		try {
			UUID.fromString(card);
		} catch (IllegalArgumentException e) {
			throw new CdsRequestError(400, where + ".card '" + card + "' is not a card uuid");
		}
		String outcome = text(f, "outcome", where);
		if (!outcome.equals("accepted") && !outcome.equals("overridden")) {
			throw new CdsRequestError(400, where + ".outcome must be accepted or overridden, got '" + outcome + "'");
		}
		String timestamp = text(f, "outcomeTimestamp", where);
		try {
			FhirDates.parse(timestamp);
		} catch (IllegalArgumentException e) {
			throw new CdsRequestError(400, where + ".outcomeTimestamp '" + timestamp + "' is not an ISO 8601 date-time");
		}
		Set<String> sent = store.sentSuggestions(service, card);
		if (sent == null) {
			throw new CdsRequestError(404, where + ".card " + card + " was never sent by CDS service " + service);
		}
		List<String> accepted = new ArrayList<>();
		JsonNode list = f.get("acceptedSuggestions");
		if (list != null && !list.isNull()) {
			if (!outcome.equals("accepted") || !list.isArray()) {
				throw new CdsRequestError(400, where + ".acceptedSuggestions is a list, and only with outcome accepted");
			}
			for (JsonNode s : list) {
				String id = s.path("id").asText("");
				if (!sent.contains(id)) {
					throw new CdsRequestError(400, where + ".acceptedSuggestions id '" + id
							+ "' is not a suggestion uuid sent on card " + card);
				}
				accepted.add(id);
			}
		}
		Coding reason = null;
		String comment = null;
		JsonNode override = f.get("overrideReason");
		if (override != null && !override.isNull()) {
			if (!outcome.equals("overridden") || !override.isObject()) {
				throw new CdsRequestError(400, where + ".overrideReason is an object, and only with outcome overridden");
			}
			JsonNode r = override.get("reason");
			if (r != null && !r.isNull()) {
				reason = offeredReason(r, where);
			}
			comment = override.hasNonNull("userComment") ? override.get("userComment").asText() : null;
		}
		return new CdsFeedbackStore.Item(card, outcome, accepted, reason, comment, timestamp);
	}

	/** The override reason, which must be one of the codes cards offer (system ending in the package's code system). */
	private Coding offeredReason(JsonNode r, String where) {
		String system = r.path("system").asText("");
		String code = r.path("code").asText("");
		boolean offered = system.endsWith(OverrideReasons.SYSTEM_PATH)
				&& overrideReasons.forSystem(system).stream().anyMatch(o -> o.code().equals(code));
		if (!offered) {
			throw new CdsRequestError(400, where + ".overrideReason.reason " + system + "|" + code
					+ " is not one of the card's overrideReasons");
		}
		return new Coding(system, code, r.path("display").asText(null));
	}

	private static String text(JsonNode f, String field, String where) {
		JsonNode v = f.get(field);
		if (v == null || !v.isTextual() || v.asText().isBlank()) {
			throw new CdsRequestError(400, where + "." + field + " is required (a string)");
		}
		return v.asText();
	}
}
