package org.example.gl.server;

import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.core.Ordered;
import org.springframework.core.annotation.Order;
import org.springframework.stereotype.Component;
import org.springframework.web.filter.OncePerRequestFilter;

/**
 * Test-EHR mode: with {@code guideline.require-token-file} set (scripts/server start --ehr --token-file FILE), every
 * request must carry {@code Authorization: Bearer <the token on the file's first line>}, else 401 and nothing is
 * read or written. This is what a CDS service meets when it follows {@code fhirServer} + {@code fhirAuthorization}
 * to an EHR's FHIR server. The token is read once at start, compared in constant time, never logged.
 */
@Component
@Order(Ordered.HIGHEST_PRECEDENCE + 10)
public class BearerTokenFilter extends OncePerRequestFilter {
	private static final Logger ourLog = LoggerFactory.getLogger(BearerTokenFilter.class);

	private final byte[] expected;

	public BearerTokenFilter(@Value("${guideline.require-token-file:}") String tokenFile) {
		if (tokenFile.isBlank()) {
			expected = null;
			return;
		}
		try {
			String first = Files.readString(Path.of(tokenFile), StandardCharsets.UTF_8).lines().findFirst().orElse("").strip();
			if (first.isEmpty()) {
				throw new IllegalStateException("token file " + tokenFile + " is empty; put the bearer token on its first line");
			}
			expected = ("Bearer " + first).getBytes(StandardCharsets.UTF_8);
		} catch (IOException e) {
			throw new UncheckedIOException("cannot read token file " + tokenFile, e);
		}
		ourLog.info("Bearer token required on every request (token from {})", tokenFile);
	}

	@Override
	protected boolean shouldNotFilter(HttpServletRequest request) {
		return expected == null;
	}

	@Override
	protected void doFilterInternal(HttpServletRequest req, HttpServletResponse resp, FilterChain chain)
			throws ServletException, IOException {
		String given = req.getHeader("Authorization");
		byte[] got = given == null ? new byte[0] : given.getBytes(StandardCharsets.UTF_8);
		if (!MessageDigest.isEqual(expected, got)) {
			resp.setHeader("WWW-Authenticate", "Bearer");
			resp.setStatus(HttpServletResponse.SC_UNAUTHORIZED);
			resp.setContentType("application/fhir+json;charset=UTF-8");
			resp.getWriter().write("{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\","
					+ "\"code\":\"login\",\"diagnostics\":\"a valid bearer token is required\"}]}");
			return;
		}
		chain.doFilter(req, resp);
	}
}
