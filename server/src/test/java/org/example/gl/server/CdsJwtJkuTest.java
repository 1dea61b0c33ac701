package org.example.gl.server;

import static org.example.gl.server.JwtFixture.CLOCK;
import static org.example.gl.server.JwtFixture.ISS;
import static org.example.gl.server.JwtFixture.SERVICE_URL;
import static org.example.gl.server.JwtFixture.claims;
import static org.example.gl.server.JwtFixture.sign;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.nimbusds.jose.jwk.JWKSet;
import com.sun.net.httpserver.HttpServer;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Tokens naming a {@code jku}: the key set is fetched from an allowed URL (a loopback HTTP server here, which the
 * issuers file allows for tests), and every way that fetch can fail is a refusal with its reason.
 */
class CdsJwtJkuTest {
	@TempDir
	Path dir;

	private HttpServer http;
	private JwtFixture f;
	private String base;
	private CdsJwtVerifier verifier;

	@BeforeEach
	void setUp() throws Exception {
		f = new JwtFixture(dir);
		Map<String, byte[]> bodies = Map.of(
				"/allowed.json", new JWKSet(f.k3.toPublicJWK()).toString().getBytes(StandardCharsets.UTF_8),
				"/private.json", new JWKSet(f.k3).toString(false).getBytes(StandardCharsets.UTF_8),
				"/junk.json", "not a key set".getBytes(StandardCharsets.UTF_8),
				"/big.json", new byte[256 * 1024 + 1]);
		http = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0);
		http.createContext("/", exchange -> {
			byte[] body = bodies.get(exchange.getRequestURI().getPath());
			exchange.sendResponseHeaders(body == null ? 404 : 200, body == null ? -1 : body.length);
			if (body != null) {
				exchange.getResponseBody().write(body);
			}
			exchange.close();
		});
		http.start();
		base = "http://127.0.0.1:" + http.getAddress().getPort();
		StringBuilder jku = new StringBuilder();
		for (String p : List.of("/allowed.json", "/private.json", "/junk.json", "/big.json", "/missing.json")) {
			jku.append(jku.length() == 0 ? "" : ", ").append('"').append(base).append(p).append('"');
		}
		jku.append(", \"http://127.0.0.1:1/closed.json\"");
		Files.writeString(dir.resolve("jku-issuers.json"),
				"{\"issuers\": [{\"iss\": \"" + ISS + "\", \"jwks\": \"k1.json\", \"jku\": [" + jku + "]}]}");
		verifier = new CdsJwtVerifier(TrustedIssuers.load(dir.resolve("jku-issuers.json")), new ReplayCache(100), 60, 300, CLOCK);
	}

	@AfterEach
	void tearDown() {
		http.stop(0);
	}

	private String reason(String jku) throws Exception {
		String token = sign(f.k3, claims().build(), jku);
		return assertThrows(CdsJwtVerifier.Rejected.class, () -> verifier.verify(token, List.of(SERVICE_URL))).getMessage();
	}

	/** Verify that a token signed with the key served at an allowed jku passes. */
	@Test
	void allowedJkuPasses() throws Exception {
		String token = sign(f.k3, claims().build(), base + "/allowed.json");
		assertEquals(ISS, verifier.verify(token, List.of(SERVICE_URL)).getIssuer());
	}

	/** Verify that a key the jku set does not hold is refused (after one re-read for key rotation). */
	@Test
	void keyNotInTheJkuSet() throws Exception {
		String token = sign(f.k2, claims().build(), base + "/allowed.json");
		String r = assertThrows(CdsJwtVerifier.Rejected.class, () -> verifier.verify(token, List.of(SERVICE_URL))).getMessage();
		assertTrue(r.contains("signature does not verify"), r);
	}

	/** Verify each failed fetch: an HTTP error, an oversized or unparsable body, a private key, nothing listening. */
	@Test
	void fetchFailures() throws Exception {
		assertTrue(reason(base + "/missing.json").contains("answered HTTP 404"));
		assertTrue(reason(base + "/big.json").contains("larger than 262144 bytes"));
		assertTrue(reason(base + "/junk.json").contains("could not be read (ParseException)"));
		assertTrue(reason(base + "/private.json").contains("could not be read (IllegalStateException)"));
		assertTrue(reason("http://127.0.0.1:1/closed.json").contains("could not be read ("));
	}
}
