package org.example.gl.common;

import java.time.DateTimeException;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * FHIR {@code date} and {@code dateTime} values (FHIR R4 "Primitive Types"): partial dates ({@code 2024},
 * {@code 2024-05}, {@code 2024-05-17}) and full date-times, which need seconds and, because a time without a zone
 * names no instant, an offset ({@code Z} or {@code +hh:mm}). Stricter than {@code java.time} (which accepts a
 * time without seconds) and than HAPI's lenient model types, so a value either side reads is read the same way.
 * A leap second ({@code :60}) is refused: {@code java.time} cannot hold it.
 */
public final class FhirDates {
	/** How much of a value is given. */
	public enum Precision {
		/** {@code 2024} */
		YEAR,
		/** {@code 2024-05} */
		MONTH,
		/** {@code 2024-05-17} */
		DAY,
		/** {@code 2024-05-17T10:30:00Z}, with or without a fraction of a second */
		SECOND
	}

	/**
	 * A parsed value: the text as given, its precision, its earliest moment as a local date-time (the first day of a
	 * partial date, midnight of a date), and the offset (null for a date, which has none).
	 */
	public record FhirDate(String text, Precision precision, LocalDateTime start, ZoneOffset offset) {
		/** The text without its offset ({@code 2024-05-17T10:30:00} of {@code 2024-05-17T10:30:00+02:00}). */
		public String localText() {
			if (offset == null) {
				return text;
			}
			return text.endsWith("Z") ? text.substring(0, text.length() - 1) : text.substring(0, text.length() - 6);
		}

		/** The instant of a date-time with its offset; an IllegalStateException for a date, which names none. */
		public OffsetDateTime toOffsetDateTime() {
			if (offset == null) {
				throw new IllegalStateException(text + " is a date, not a date-time with an offset");
			}
			return start.atOffset(offset);
		}
	}

	// FHIR's own grammar for date/dateTime, with the rules it states in prose: seconds with a time, a zone with a time
	private static final Pattern DATE_TIME = Pattern.compile(
			"(\\d{4})(?:-(\\d{2})(?:-(\\d{2})(?:T(\\d{2}):(\\d{2}):(\\d{2})(?:\\.(\\d{1,9}))?(Z|[+-]\\d{2}:\\d{2}))?)?)?");

	private FhirDates() {}

	/** A FHIR {@code date} or {@code dateTime}, or an IllegalArgumentException saying why not. */
	public static FhirDate parse(String text) {
		if (text == null) {
			throw new IllegalArgumentException("a FHIR date or dateTime is required, got nothing");
		}
		Matcher m = DATE_TIME.matcher(text);
		if (!m.matches()) {
			throw new IllegalArgumentException("'" + text + "' is not a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD"
					+ " or YYYY-MM-DDThh:mm:ss[.fff] with Z or +hh:mm)");
		}
		try {
			int year = Integer.parseInt(m.group(1));
			int month = m.group(2) == null ? 1 : Integer.parseInt(m.group(2));
			int day = m.group(3) == null ? 1 : Integer.parseInt(m.group(3));
			LocalDate date = LocalDate.of(year, month, day);
			if (m.group(4) == null) {
				Precision p = m.group(2) == null ? Precision.YEAR : m.group(3) == null ? Precision.MONTH : Precision.DAY;
				return new FhirDate(text, p, date.atStartOfDay(), null);
			}
			String fraction = m.group(7) == null ? "" : m.group(7);
			int nanos = fraction.isEmpty() ? 0 : Integer.parseInt((fraction + "00000000").substring(0, 9));
			LocalDateTime start = date.atTime(
					Integer.parseInt(m.group(4)), Integer.parseInt(m.group(5)), Integer.parseInt(m.group(6)), nanos);
			ZoneOffset offset = "Z".equals(m.group(8)) ? ZoneOffset.UTC : ZoneOffset.of(m.group(8));
			return new FhirDate(text, Precision.SECOND, start, offset);
		} catch (DateTimeException e) {
			throw new IllegalArgumentException("'" + text + "' is not a valid FHIR date or dateTime: " + e.getMessage(), e);
		}
	}
}
