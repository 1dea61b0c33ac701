package org.example.gl.server;

import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.web.filter.OncePerRequestFilter;

/**
 * Bearer-token protection from a token file (first line = the token; read once at start, compared in constant time,
 * never logged). Two modes:
 *
 * <ul>
 *   <li>{@code guideline.require-token-file} (scripts/server start --ehr): a test EHR, every request needs the token.
 *       This is what a CDS service meets when it follows {@code fhirServer} + {@code fhirAuthorization}.
 *   <li>{@code guideline.write-token-file} (scripts/server start --write-token-file): a knowledge server whose
 *       writes need the token: PUT/PATCH/DELETE, POST to /fhir (create, transaction/batch, {@code $install} and any
 *       other operation) except the read-only evaluation and terminology operations in {@link #READ_ONLY_OPERATIONS},
 *       and POST /packages, and any {@code $export} kick-off (GET too: it stores the export on the server). Reads, {@code $apply}/{@code $evaluate} and CDS Hooks stay open (a CDS client's JWT is
 *       checked by the CDS Hooks endpoint itself, if configured). A JWT verifier can be added here later as a second
 *       way to accept a write.
 * </ul>
 *
 * <p>Without a write token the server only starts on a loopback address: writes open is a local mode only.
 * Registered by {@link FilterConfig}.
 */
public class BearerTokenFilter extends OncePerRequestFilter {
	private static final Logger ourLog = LoggerFactory.getLogger(BearerTokenFilter.class);

	/** POSTed operations that write nothing: open when only writes are protected. */
	static final Set<String> READ_ONLY_OPERATIONS = Set.of(
			"$apply", "$r5.apply", "$evaluate", "$cql", "$data-requirements", "$expand", "$validate-code", "$lookup",
			"$validate", "$translate", "$subsumes", "$everything", "_search");

	private final byte[] everyRequest;
	private final byte[] writes;

	/**
	 * The filter for the token files ("" = not set) of a server listening on {@code address} (null: every
	 * interface); an IllegalStateException when writes would be open on a non-loopback address.
	 */
	public BearerTokenFilter(String tokenFile, String writeTokenFile, InetAddress address) {
		everyRequest = readToken(tokenFile);
		writes = readToken(writeTokenFile);
		if (everyRequest != null) {
			ourLog.info("Bearer token required on every request (token from {})", tokenFile);
		} else if (writes != null) {
			ourLog.info("Writes protected: bearer token required to write (token from {}); reads open", writeTokenFile);
		} else {
			if (address == null || !address.isLoopbackAddress()) {
				throw new IllegalStateException("server.address " + shown(address) + " is not a loopback address: writes "
						+ "would be open to the network; set guideline.write-token-file (scripts/server --write-token-file)");
			}
			ourLog.info("Writes open (local mode): anyone who can reach {} can write", shown(address));
		}
	}

	private static byte[] readToken(String tokenFile) {
		if (tokenFile.isBlank()) {
			return null;
		}
		try {
			String first = Files.readString(Path.of(tokenFile), StandardCharsets.UTF_8).lines().findFirst().orElse("").strip();
			if (first.isEmpty()) {
				throw new IllegalStateException("token file " + tokenFile + " is empty; put the bearer token on its first line");
			}
			return ("Bearer " + first).getBytes(StandardCharsets.UTF_8);
		} catch (IOException e) {
			throw new UncheckedIOException("cannot read token file " + tokenFile, e);
		}
	}

	/** The address as server.address names it (every interface when unset). */
	static String shown(InetAddress address) {
		return address == null ? "(every interface)" : address.getHostAddress();
	}

	/** True when the request may change stored data (see the class comment). */
	static boolean isWrite(HttpServletRequest req) {
		String method = req.getMethod();
		String path = req.getRequestURI().substring(req.getContextPath().length());
		if (path.startsWith("/fhir") && path.endsWith("/$export")) {
			// a Bulk Data kick-off is a GET, but it starts a batch job that stores the whole export as Binaries
			return true;
		}
		if ("GET".equals(method) || "HEAD".equals(method) || "OPTIONS".equals(method)) {
			return false;
		}
		if (!"POST".equals(method)) {
			return true; // PUT, PATCH, DELETE
		}
		if (path.equals("/cds-services") || path.startsWith("/cds-services/")) {
			return false;
		}
		if (!path.startsWith("/fhir")) {
			return true; // /packages and anything else
		}
		String last = path.substring(path.lastIndexOf('/') + 1);
		return !READ_ONLY_OPERATIONS.contains(last);
	}

	@Override
	protected boolean shouldNotFilter(HttpServletRequest request) {
		return everyRequest == null && writes == null;
	}

	@Override
	protected void doFilterInternal(HttpServletRequest req, HttpServletResponse resp, FilterChain chain)
			throws ServletException, IOException {
		byte[] expected = everyRequest != null ? everyRequest : isWrite(req) ? writes : null;
		if (expected == null) {
			chain.doFilter(req, resp);
			return;
		}
		String given = req.getHeader("Authorization");
		byte[] got = given == null ? new byte[0] : given.getBytes(StandardCharsets.UTF_8);
		if (!MessageDigest.isEqual(expected, got)) {
			resp.setHeader("WWW-Authenticate", "Bearer");
			resp.setStatus(HttpServletResponse.SC_UNAUTHORIZED);
			resp.setContentType("application/fhir+json;charset=UTF-8");
			String what = everyRequest != null ? "a valid bearer token is required" : "writes need a valid bearer token";
			resp.getWriter().write("{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\","
					+ "\"code\":\"login\",\"diagnostics\":\"" + what + "\"}]}");
			return;
		}
		chain.doFilter(req, resp);
	}
}
