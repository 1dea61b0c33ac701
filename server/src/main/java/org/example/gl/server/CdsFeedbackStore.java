package org.example.gl.server;

import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.rest.api.server.SystemRequestDetails;
import com.fasterxml.jackson.databind.JsonNode;
import java.sql.Timestamp;
import java.util.ArrayList;
import java.util.Date;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import javax.sql.DataSource;
import org.hl7.fhir.r4.model.Basic;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.CodeType;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.DateTimeType;
import org.hl7.fhir.r4.model.StringType;
import org.springframework.dao.DataAccessException;
import org.springframework.jdbc.core.JdbcTemplate;

/**
 * Durable memory of the cards this service sent and of the feedback it received, in the server's own database (so it
 * survives a restart and is shared by every node on one database).
 *
 * <p>Why remember cards rather than make their uuids verifiable (an HMAC in the uuid): feedback must prove that an
 * {@code acceptedSuggestions} id was sent <em>on that card</em>; a MAC would need a secret shared by every node and
 * kept out of the FHIR API, and still could not tell which suggestions a card carried without storing them.
 *
 * <p>Cards sent: one row per card in the plain table {@value #CARD_TABLE} (card uuid, service, its suggestion uuids,
 * when), written with one batched JDBC insert per call that has cards, on the same {@code DataSource} as HAPI's JPA
 * storage. Not a FHIR resource: every CDS call with cards writes this record, and creating it as a {@code Basic}
 * through HAPI's JPA DAO (resource table, version, index rows, Hibernate flush) was half of a call's CPU under load
 * (BENCHMARKS section 7). The insert is synchronous: feedback may arrive right after the response and must find the
 * card. Nothing about the patient is kept (no subject, no resources). The table is created at start-up, if missing,
 * in SQL that H2 and PostgreSQL both accept; several nodes may start together on one database ({@link #createSchema}).
 *
 * <p>Feedback received stays a FHIR {@code Basic} per item (code {@link #RECORD_SYSTEM}{@code |feedback}): it is rare
 * (a clinician's action, not every chart opening), and it is the durable record that people and {@code guideline cds
 * feedback} read through the FHIR API.
 */
public class CdsFeedbackStore {
	/** Basic.code system of this server's feedback records (not clinical; never part of the package). */
	public static final String RECORD_SYSTEM = "http://example.org/fhir/gl-treatment/cds-record";
	public static final String EXT = "http://example.org/fhir/gl-treatment/StructureDefinition/cds-";
	/** The table of cards sent. */
	static final String CARD_TABLE = "gl_cds_card";
	/** Width of the suggestions column: suggestion uuids (36 characters) separated by one space. */
	static final int SUGGESTIONS_WIDTH = 4000;
	// create table if not exists: H2 2.x and PostgreSQL 9.1+ both accept it, and the types are common to both
	private static final String CREATE_CARD_TABLE = "create table if not exists " + CARD_TABLE + " ("
			+ "card_uuid varchar(36) primary key, "
			+ "service varchar(200) not null, "
			+ "suggestions varchar(" + SUGGESTIONS_WIDTH + ") not null, "
			+ "created timestamp not null)";
	private static final String INSERT_CARD =
			"insert into " + CARD_TABLE + " (card_uuid, service, suggestions, created) values (?, ?, ?, ?)";
	private static final String SELECT_SUGGESTIONS =
			"select suggestions from " + CARD_TABLE + " where card_uuid = ? and service = ?";

	private final DaoRegistry daos;
	private final JdbcTemplate jdbc;

	/**
	 * The store on HAPI's {@code daos} (feedback items) and the server's {@code dataSource} (cards sent); creates the
	 * card table if it is missing.
	 */
	public CdsFeedbackStore(DaoRegistry daos, DataSource dataSource) {
		this.daos = daos;
		this.jdbc = new JdbcTemplate(dataSource);
		createSchema();
	}

	/**
	 * Creates the card table unless it exists; safe to run again and on several nodes at once. PostgreSQL's
	 * {@code create table if not exists} is not atomic: of two nodes starting together on an empty database, one
	 * may fail with a duplicate object (or a unique violation in its catalogue) while the other creates the table.
	 * Such a failure is harmless when the table is there afterwards, so only then it is ignored.
	 */
	void createSchema() {
		try {
			jdbc.execute(CREATE_CARD_TABLE);
		} catch (DataAccessException e) {
			if (!cardTableExists()) {
				throw e;
			}
		}
	}

	private boolean cardTableExists() {
		try {
			jdbc.queryForObject("select count(*) from " + CARD_TABLE + " where 1 = 0", Integer.class);
			return true;
		} catch (DataAccessException e) {
			return false;
		}
	}

	/** Remembers the cards of one call of {@code service} (uuid and suggestion uuids); nothing when there are none. */
	public void recordCards(String service, JsonNode cards) {
		if (cards == null || cards.isEmpty()) {
			return;
		}
		Timestamp now = new Timestamp(System.currentTimeMillis());
		List<Object[]> rows = new ArrayList<>();
		for (JsonNode card : cards) {
			String uuid = card.path("uuid").asText();
			List<String> suggestions = new ArrayList<>();
			card.path("suggestions").forEach(s -> suggestions.add(s.path("uuid").asText()));
			String joined = String.join(" ", suggestions);
			if (joined.length() > SUGGESTIONS_WIDTH) {
				// a card's suggestions are its recommendation's few proposals; this many means a bug upstream
				throw new IllegalStateException("card " + uuid + " has " + suggestions.size()
						+ " suggestions, more than " + CARD_TABLE + ".suggestions holds");
			}
			rows.add(new Object[] {uuid, service, joined, now});
		}
		jdbc.batchUpdate(INSERT_CARD, rows);
	}

	/** The suggestion uuids of card {@code uuid} as sent by {@code service}, or null when it never sent that card. */
	public Set<String> sentSuggestions(String service, String uuid) {
		String joined = jdbc.query(SELECT_SUGGESTIONS, rs -> rs.next() ? rs.getString(1) : null, uuid, service);
		if (joined == null) {
			return null;
		}
		Set<String> out = new LinkedHashSet<>();
		for (String s : joined.split(" ")) {
			if (!s.isEmpty()) {
				out.add(s);
			}
		}
		return out;
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
