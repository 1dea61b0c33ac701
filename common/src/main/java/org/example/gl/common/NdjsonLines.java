package org.example.gl.common;

import java.io.IOException;
import java.io.InputStream;
import java.util.Arrays;

/**
 * Reads NDJSON (FHIR Bulk Data's newline-delimited JSON) as raw lines with their positions, the way Python's
 * population reader ({@code guideline/evaluation/records.py}) counts them: every {@code \n}-terminated line counts
 * (blank ones too), a last line without a newline counts, a UTF-8 byte order mark at the start of the file is not
 * part of line 1. Lines are handed over as bytes, undecoded: the caller decides what a bad byte means, and the byte
 * offsets let it hand a bad line's exact slice back to Python.
 */
public final class NdjsonLines {
	/** What is done with each line. */
	@FunctionalInterface
	public interface Handler {
		/**
		 * One line: {@code raw[from, len)} is its content with the newline, if it had one ({@code from} is 3 on line 1
		 * after a byte order mark, else 0); {@code lineno} counts from 1; {@code start} and {@code end} are its byte
		 * offsets in the input (end exclusive, the BOM included in line 1). {@code raw} is reused for the next line.
		 */
		void line(byte[] raw, int from, int len, long lineno, long start, long end) throws IOException, InterruptedException;
	}

	private static final byte[] BOM = {(byte) 0xef, (byte) 0xbb, (byte) 0xbf};

	private NdjsonLines() {}

	/** Reads {@code in} to its end, calling {@code handler} once per line in order. */
	public static void read(InputStream in, Handler handler) throws IOException, InterruptedException {
		byte[] buf = new byte[1 << 20];
		byte[] line = new byte[1 << 16];
		int lineLen = 0;
		long offset = 0;
		long lineno = 0;
		int n;
		while ((n = in.read(buf)) >= 0) {
			int from = 0;
			for (int i = 0; i < n; i++) {
				if (buf[i] == '\n') {
					line = append(line, lineLen, buf, from, i + 1);
					lineLen += i + 1 - from;
					long start = offset;
					offset += lineLen;
					lineno++;
					handler.line(line, contentStart(line, lineLen, lineno), lineLen, lineno, start, offset);
					lineLen = 0;
					from = i + 1;
				}
			}
			line = append(line, lineLen, buf, from, n);
			lineLen += n - from;
		}
		if (lineLen > 0) {
			long start = offset;
			offset += lineLen;
			lineno++;
			handler.line(line, contentStart(line, lineLen, lineno), lineLen, lineno, start, offset);
		}
	}

	/** True when {@code raw[from, len)} holds only whitespace as Python's {@code bytes.strip()} sees it. */
	public static boolean isBlank(byte[] raw, int from, int len) {
		for (int i = from; i < len; i++) {
			if (!isAsciiSpace(raw[i])) {
				return false;
			}
		}
		return true;
	}

	/** Python's {@code bytes.strip()} whitespace: space, tab, newline, carriage return, vertical tab, form feed. */
	public static boolean isAsciiSpace(byte b) {
		return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == 0x0b || b == 0x0c;
	}

	private static int contentStart(byte[] line, int len, long lineno) {
		if (lineno != 1 || len < BOM.length) {
			return 0;
		}
		for (int i = 0; i < BOM.length; i++) {
			if (line[i] != BOM[i]) {
				return 0;
			}
		}
		return BOM.length;
	}

	private static byte[] append(byte[] line, int lineLen, byte[] buf, int from, int to) {
		int take = to - from;
		byte[] out = lineLen + take > line.length ? Arrays.copyOf(line, Math.max(line.length * 2, lineLen + take)) : line;
		System.arraycopy(buf, from, out, lineLen, take);
		return out;
	}
}
