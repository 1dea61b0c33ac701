package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import org.h2.jdbcx.JdbcDataSource;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.springframework.jdbc.core.JdbcTemplate;

/**
 * The table of cards sent ({@code CdsFeedbackStore.recordCards} / {@code sentSuggestions}) on an in-memory H2
 * database, as the server uses it by default: what feedback is checked against.
 */
class CdsCardLogTest {
	private static final ObjectMapper MAPPER = new ObjectMapper();
	private JdbcDataSource dataSource;
	private CdsFeedbackStore store;

	@BeforeEach
	void freshDatabase() {
		dataSource = new JdbcDataSource();
		// a database of its own per test; kept while the test runs even between connections
		dataSource.setURL("jdbc:h2:mem:cardlog-" + UUID.randomUUID() + ";DB_CLOSE_DELAY=-1");
		dataSource.setUser("sa");
		store = new CdsFeedbackStore(null, dataSource); // the card table needs no FHIR DAO
	}

	/** A card as CdsCards writes it (only what the log reads: uuid and the suggestions' uuids). */
	private static ObjectNode card(String uuid, String... suggestions) {
		ObjectNode c = MAPPER.createObjectNode().put("uuid", uuid).put("summary", "not stored");
		ArrayNode s = c.putArray("suggestions");
		for (String id : suggestions) {
			s.addObject().put("uuid", id).put("label", "not stored");
		}
		return c;
	}

	private static ArrayNode cards(ObjectNode... cards) {
		ArrayNode out = MAPPER.createArrayNode();
		for (ObjectNode c : cards) {
			out.add(c);
		}
		return out;
	}

	private int rows() {
		return new JdbcTemplate(dataSource).queryForObject("select count(*) from " + CdsFeedbackStore.CARD_TABLE, Integer.class);
	}

	/** Verify that every card of a call is remembered with its suggestion uuids, a card without any with none. */
	@Test
	void roundTrip() {
		String a = UUID.randomUUID().toString();
		String b = UUID.randomUUID().toString();
		String s1 = UUID.randomUUID().toString();
		String s2 = UUID.randomUUID().toString();
		store.recordCards("GLR1", cards(card(a, s1, s2), card(b)));
		assertEquals(Set.of(s1, s2), store.sentSuggestions("GLR1", a));
		assertEquals(Set.of(), store.sentSuggestions("GLR1", b));
		assertEquals(2, rows());
	}

	/** Verify that a card never sent, or sent by another service, is unknown (null), not a card without suggestions. */
	@Test
	void unknownCard() {
		String a = UUID.randomUUID().toString();
		store.recordCards("GLR1", cards(card(a, UUID.randomUUID().toString())));
		assertNull(store.sentSuggestions("GLR1", UUID.randomUUID().toString()));
		assertNull(store.sentSuggestions("GLR2", a));
	}

	/** Verify that a call without cards writes nothing. */
	@Test
	void noCards() {
		store.recordCards("GLR1", cards());
		store.recordCards("GLR1", null);
		assertEquals(0, rows());
	}

	/** Verify that creating the schema again, and a second store (another node) on the same database, keeps the rows. */
	@Test
	void schemaCreationIsIdempotent() {
		String a = UUID.randomUUID().toString();
		String s1 = UUID.randomUUID().toString();
		store.recordCards("GLR1", cards(card(a, s1)));
		store.createSchema();
		store.createSchema();
		CdsFeedbackStore other = new CdsFeedbackStore(null, dataSource);
		assertEquals(Set.of(s1), other.sentSuggestions("GLR1", a));
		assertEquals(1, rows());
	}

	/** Verify that a card with more suggestions than the column holds fails loudly instead of being cut short. */
	@Test
	void tooManySuggestions() {
		String[] many = new String[CdsFeedbackStore.SUGGESTIONS_WIDTH / 37 + 1];
		for (int i = 0; i < many.length; i++) {
			many[i] = UUID.randomUUID().toString();
		}
		ArrayNode oversized = cards(card(UUID.randomUUID().toString(), many));
		assertThrows(IllegalStateException.class, () -> store.recordCards("GLR1", oversized));
		assertEquals(0, rows());
		// the widest card that fits is stored whole
		String[] fits = List.of(many).subList(0, many.length - 1).toArray(String[]::new);
		String id = UUID.randomUUID().toString();
		store.recordCards("GLR1", cards(card(id, fits)));
		assertEquals(Set.of(fits), store.sentSuggestions("GLR1", id));
	}
}
