package org.example.gl.common;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Line numbers and byte ranges as Python's population reader counts them. */
class NdjsonLinesTest {
	/** One line as the handler saw it. */
	private record Seen(String text, long lineno, long start, long end) {}

	private static List<Seen> read(byte[] input) throws Exception {
		List<Seen> out = new ArrayList<>();
		NdjsonLines.read(new ByteArrayInputStream(input), (raw, from, len, lineno, start, end) ->
				out.add(new Seen(new String(raw, from, len - from, StandardCharsets.UTF_8), lineno, start, end)));
		return out;
	}

	/** Verify that each line keeps its newline, blank lines count, and a last line without a newline is read. */
	@Test
	void countsEveryLine() throws Exception {
		List<Seen> lines = read("{\"a\":1}\n\n{\"b\":2}".getBytes(StandardCharsets.UTF_8));
		assertEquals(List.of(new Seen("{\"a\":1}\n", 1, 0, 8), new Seen("\n", 2, 8, 9), new Seen("{\"b\":2}", 3, 9, 16)), lines);
	}

	/** Verify that a byte order mark is not part of line 1's content but is part of its byte range. */
	@Test
	void skipsTheByteOrderMarkOfLineOne() throws Exception {
		byte[] bom = {(byte) 0xef, (byte) 0xbb, (byte) 0xbf};
		byte[] body = "{}\n{}\n".getBytes(StandardCharsets.UTF_8);
		byte[] input = new byte[bom.length + body.length];
		System.arraycopy(bom, 0, input, 0, 3);
		System.arraycopy(body, 0, input, 3, body.length);
		List<Seen> lines = read(input);
		assertEquals(new Seen("{}\n", 1, 0, 6), lines.get(0));
		assertEquals(new Seen("{}\n", 2, 6, 9), lines.get(1));
	}

	/** Verify that a line longer than the read buffer and the line buffer arrives whole. */
	@Test
	void longLinesArriveWhole() throws Exception {
		String big = "x".repeat((1 << 20) + 12345);
		List<Seen> lines = read((big + "\nend\n").getBytes(StandardCharsets.UTF_8));
		assertEquals(2, lines.size());
		assertEquals(big + "\n", lines.get(0).text());
		assertEquals(new Seen("end\n", 2, big.length() + 1, big.length() + 5), lines.get(1));
	}

	/** Verify that an empty input has no lines. */
	@Test
	void emptyInput() throws Exception {
		assertEquals(List.of(), read(new byte[0]));
	}

	/** Verify that blank means Python's bytes.strip() whitespace only. */
	@Test
	void blankIsAsciiWhitespace() {
		byte[] ws = " \t\r\n\u000b\f".getBytes(StandardCharsets.US_ASCII);
		assertTrue(NdjsonLines.isBlank(ws, 0, ws.length));
		byte[] nbsp = "\u00a0\n".getBytes(StandardCharsets.UTF_8);
		assertFalse(NdjsonLines.isBlank(nbsp, 0, nbsp.length));
		byte[] text = "  {}".getBytes(StandardCharsets.US_ASCII);
		assertTrue(NdjsonLines.isBlank(text, 0, 2));
		assertFalse(NdjsonLines.isBlank(text, 0, text.length));
	}
}
