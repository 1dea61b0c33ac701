package org.example.gl.common;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import org.example.gl.common.FhirDates.FhirDate;
import org.example.gl.common.FhirDates.Precision;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

/** FHIR date and dateTime values: partial dates, full date-times, and what is refused. */
class FhirDatesTest {
	/** Verify that partial dates parse with their precision, their first moment and no offset. */
	@ParameterizedTest
	@CsvSource({"2024, YEAR, 2024-01-01T00:00", "2024-05, MONTH, 2024-05-01T00:00", "2024-05-17, DAY, 2024-05-17T00:00",
		"2024-02-29, DAY, 2024-02-29T00:00"})
	void partialDates(String text, Precision precision, LocalDateTime start) {
		FhirDate d = FhirDates.parse(text);
		assertEquals(precision, d.precision());
		assertEquals(start, d.start());
		assertNull(d.offset());
		assertEquals(text, d.localText());
	}

	/** Verify that a date-time keeps its offset, and its local text is the text without it. */
	@Test
	void dateTimes() {
		FhirDate utc = FhirDates.parse("2026-06-01T12:00:00Z");
		assertEquals(Precision.SECOND, utc.precision());
		assertEquals(ZoneOffset.UTC, utc.offset());
		assertEquals("2026-06-01T12:00:00", utc.localText());
		assertEquals(OffsetDateTime.parse("2026-06-01T12:00:00Z"), utc.toOffsetDateTime());

		FhirDate east = FhirDates.parse("2026-06-01T12:00:00.123456+02:00");
		assertEquals(ZoneOffset.ofHours(2), east.offset());
		assertEquals("2026-06-01T12:00:00.123456", east.localText());
		assertEquals(123_456_000, east.start().getNano());
		assertEquals(OffsetDateTime.parse("2026-06-01T10:00:00.123456Z").toInstant(), east.toOffsetDateTime().toInstant());
	}

	/** Verify that a date has no instant: asking for one is an error, not a guess at midnight UTC. */
	@Test
	void aDateHasNoInstant() {
		assertThrows(IllegalStateException.class, () -> FhirDates.parse("2024-05-17").toOffsetDateTime());
	}

	/** Verify that what FHIR does not allow is refused: no seconds, no zone, impossible dates, other text. */
	@ParameterizedTest
	@ValueSource(strings = {"", "yesterday", "24", "2024-5", "2024-05-17T10:30Z", "2024-05-17T10:30:00", "2024-13",
		"2024-02-30", "2023-02-29", "2024-05-17T24:00:00Z", "2024-05-17T10:30:60Z", "2024-05-17 10:30:00Z",
		"2024-05-17T10:30:00+2:00", " 2024"})
	void refuses(String text) {
		assertThrows(IllegalArgumentException.class, () -> FhirDates.parse(text));
	}

	/** Verify that null is refused with a message, not a NullPointerException. */
	@Test
	void refusesNull() {
		assertThrows(IllegalArgumentException.class, () -> FhirDates.parse(null));
	}
}
