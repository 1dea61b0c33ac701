package org.example.gl.batch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The bulk stream's grouping of NDJSON lines into per-patient records (as Python's {@code _ndjson_records}), seen
 * through the {@code submit} seam: no engine runs, each good record becomes a line describing its group.
 */
class StreamGroupingTest {
	/**
	 * Reads Patients, Conditions (any code) and Observations with code http://loinc.org|1 only, as
	 * {@code pushdown.Reads.spec} writes it (tests/unit/evaluation/test_pushdown.py checks that it does).
	 */
	static final String READS = resource("reads.json");

	private static String resource(String name) {
		try (InputStream in = StreamGroupingTest.class.getResourceAsStream(name)) {
			return new String(in.readAllBytes(), StandardCharsets.UTF_8);
		} catch (IOException e) {
			throw new UncheckedIOException(e);
		}
	}

	private static String program(String reads) {
		return "{\"cards\": {}, \"activities\": {}, \"reads\": " + reads + "}";
	}

	private Stream stream;

	@BeforeEach
	void setUp() throws Exception {
		use(READS);
	}

	private void use(String reads) throws Exception {
		Document document = new Document(new ObjectMapper().readTree(program(reads)));
		stream = new Stream(document, null, () -> null, "2026-06-01T12:00:00Z") {
			@Override
			Future<String> submit(Group g, long consumed) {
				return CompletableFuture.completedFuture("G " + g.key + " " + g.first + "-" + g.last + " kept="
						+ g.kept.size() + "/" + g.all.size() + " consumed=" + consumed);
			}
		};
	}

	private List<String> records(String ndjson) throws Exception {
		return records(ndjson.getBytes(StandardCharsets.UTF_8));
	}

	private List<String> records(byte[] ndjson) throws Exception {
		BlockingQueue<Future<String>> queue = new LinkedBlockingQueue<>();
		stream.read(new ByteArrayInputStream(ndjson), queue);
		List<String> out = new ArrayList<>();
		for (Future<String> f : queue) {
			out.add(f.get());
		}
		return out;
	}

	private static String patient(String id) {
		return "{\"resourceType\":\"Patient\",\"id\":\"" + id + "\"}\n";
	}

	private static String condition(String ref) {
		return "{\"resourceType\":\"Condition\",\"subject\":{\"reference\":\"" + ref + "\"}}\n";
	}

	private static String observation(String ref, String code) {
		return "{\"resourceType\":\"Observation\",\"subject\":{\"reference\":\"" + ref + "\"},"
				+ "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"" + code + "\"}]}}\n";
	}

	/** Verify that consecutive lines of one patient form one record, and a new patient starts the next. */
	@Test
	void consecutiveLinesOfOnePatient() throws Exception {
		String input = patient("p1") + condition("Patient/p1") + condition("Patient/p1") + patient("p2") + condition("Patient/p2");
		String firstTwo = patient("p1") + condition("Patient/p1") + condition("Patient/p1");
		assertEquals(List.of("G p1 1-3 kept=3/3 consumed=" + (firstTwo.length() + patient("p2").length()),
				"G p2 4-5 kept=2/2 consumed=" + input.length()), records(input));
		assertEquals(5, stream.lines);
		assertEquals(2, stream.records);
	}

	/** Verify that a patient's resources may come before its Patient line, and lines without a patient join in. */
	@Test
	void resourcesBeforeThePatientAndUnreferencedLines() throws Exception {
		String medication = "{\"resourceType\":\"Medication\",\"id\":\"m1\"}\n";
		List<String> out = records(condition("Patient/p1") + medication + patient("p1") + condition("Patient/p2") + patient("p2"));
		assertEquals("G p1 1-3", out.get(0).substring(0, 8));
		assertEquals("G p2 4-5", out.get(1).substring(0, 8));
	}

	/** Verify that a reference names its patient wherever "Patient/id" sits in it; subject first, then patient. */
	@Test
	void patientKeys() {
		assertEquals("p1", Stream.patientKey("Patient/p1"));
		assertEquals("p1", Stream.patientKey("http://ehr.example/fhir/Patient/p1/_history/2"));
		assertNull(Stream.patientKey("Group/g1"));
		assertNull(Stream.patientKey("Patient/"));
		assertNull(Stream.patientKey(null));
	}

	/**
	 * Verify the push-down: a type no retrieve reads is skipped unscanned (the record's line range still covers
	 * it); an Observation whose raw text holds no kept code is dropped unscanned, its patient placed; one whose
	 * {@code code} holds no kept code while the kept code appears elsewhere in it is scanned (checked), then
	 * dropped before the Bundle.
	 */
	@Test
	void pushDown() throws Exception {
		String elsewhere = "{\"resourceType\":\"Observation\",\"subject\":{\"reference\":\"Patient/p1\"},"
				+ "\"category\":[{\"coding\":[{\"code\":\"1\"}]}],\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"2\"}]}}\n";
		String input = patient("p1") + observation("Patient/p1", "1") + observation("Patient/p1", "2") + elsewhere
				+ "{\"resourceType\":\"Immunization\",\"patient\":{\"reference\":\"Patient/p1\"}}\n";
		// all: the Patient, both scanned Observations; the raw-dropped one is in neither list
		assertEquals("G p1 1-5 kept=2/3", records(input).get(0).substring(0, 17));
		assertEquals(1, stream.skipped);
		assertEquals(2, stream.dropped);
	}

	/**
	 * Verify that a line dropped on its raw text still places its patient, as a scanned one: a patient without a
	 * Patient line goes back to Python, and a new patient closes the open record.
	 */
	@Test
	void aRawDroppedLinePlacesItsPatient() throws Exception {
		List<String> out = records(patient("p1") + observation("Patient/p2", "2") + patient("p3"));
		assertEquals("G p1 1-1", out.get(0).substring(0, 8));
		assertEquals("B", out.get(1).substring(0, 1));
		assertEquals("G p3 3-3", out.get(2).substring(0, 8));
		assertEquals(1, stream.dropped);
	}

	/**
	 * Verify {@code Reads.drops} on the raw lines tests/unit/evaluation/test_pushdown.py checks Python's on: the same
	 * patient, or null (parse it) for each.
	 */
	@Test
	void rawDropsAsPython() throws Exception {
		Reads reads = new Reads(new ObjectMapper().readTree(READS));
		JsonNode cases = new ObjectMapper().readTree(resource("raw-drops.json"));
		assertTrue(cases.size() > 10);
		for (JsonNode c : cases) {
			byte[] line = c.get("line").asText().getBytes(StandardCharsets.UTF_8);
			String want = c.get("patient").isNull() ? null : c.get("patient").asText();
			assertEquals(want, reads.drops(line, 0, line.length), c.get("why").asText());
		}
		assertNull(new Reads(new ObjectMapper().readTree("null")).drops(new byte[] {'{', '}'}, 0, 2));
	}

	/** Verify that without a push-down ({@code --read-all}: reads null) every line is read and kept. */
	@Test
	void readAll() throws Exception {
		use("null");
		String input = patient("p1") + observation("Patient/p1", "2")
				+ "{\"resourceType\":\"Immunization\",\"patient\":{\"reference\":\"Patient/p1\"}}\n";
		assertEquals("G p1 1-3 kept=3/3", records(input).get(0).substring(0, 17));
		assertEquals(0, stream.skipped);
		assertEquals(0, stream.dropped);
	}

	/** Verify that blank lines carry nothing and split nothing, but still count as line numbers. */
	@Test
	void blankLines() throws Exception {
		List<String> out = records(patient("p1") + "\n   \n" + condition("Patient/p1") + "\n");
		assertEquals("G p1 1-4 kept=2/2", out.get(0).substring(0, 17));
		assertEquals(2, stream.lines);
	}

	/** Verify that a record with a line Python must judge goes back as a byte range (B), not evaluated. */
	@Test
	void badLinesGoBackToPython() throws Exception {
		String first = patient("p1");
		String bad = "{not json\n";
		String input = first + bad + condition("Patient/p1") + patient("p2");
		List<String> out = records(input);
		int end = first.length() + bad.length() + condition("Patient/p1").length();
		// consumed: through the line that closed the record (p2's), where Python may resume
		assertEquals("B\t" + input.length() + "\t0\t" + end + "\t1", out.get(0));
		assertEquals("G p2 4-4", out.get(1).substring(0, 8));
	}

	/** Verify the other records Python reports: no Patient, two Patients, a Patient without id, a Bundle line. */
	@Test
	void recordsPythonReports() throws Exception {
		assertEquals("B", records(condition("Patient/p1")).get(0).substring(0, 1));
		assertEquals("B", records(patient("p1") + patient("p1")).get(0).substring(0, 1));
		List<String> noId = records("{\"resourceType\":\"Patient\"}\n" + patient("p2"));
		assertEquals(List.of("B", "G"), noId.stream().map(s -> s.substring(0, 1)).toList());
		assertEquals("B", records(patient("p1") + "{\"resourceType\":\"Bundle\"}\n").get(0).substring(0, 1));
		assertEquals("B", records(patient("p1") + "[1]\n").get(0).substring(0, 1));
	}

	/** Verify that a byte order mark and a last line without newline are read as Python reads them. */
	@Test
	void bomAndNoFinalNewline() throws Exception {
		byte[] body = (patient("p1") + condition("Patient/p1").strip()).getBytes(StandardCharsets.UTF_8);
		byte[] input = new byte[body.length + 3];
		input[0] = (byte) 0xef;
		input[1] = (byte) 0xbb;
		input[2] = (byte) 0xbf;
		System.arraycopy(body, 0, input, 3, body.length);
		assertEquals(List.of("G p1 1-2 kept=2/2 consumed=" + input.length), records(input));
	}

	/** Verify that an empty input has no records. */
	@Test
	void emptyInput() throws Exception {
		assertEquals(List.of(), records(""));
	}
}
