package org.example.gl.server;

import static org.example.gl.server.JwtFixture.SERVICE_URL;
import static org.example.gl.server.JwtFixture.claims;
import static org.example.gl.server.JwtFixture.sign;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.mock.web.MockFilterChain;
import org.springframework.mock.web.MockHttpServletRequest;
import org.springframework.mock.web.MockHttpServletResponse;

/**
 * The filter's side of CDS Hooks security: which requests it checks, how it answers a refusal (401, the reason, never
 * the token, nothing passed on), the aud it expects, and whether the server may start without issuers.
 */
class CdsJwtFilterTest {
	@TempDir
	Path dir;

	private JwtFixture f;
	private CdsJwtFilter filter;

	@BeforeEach
	void setUp() throws Exception {
		f = new JwtFixture(dir);
		filter = new CdsJwtFilter(f.verifier(1000), "");
	}

	private static MockHttpServletRequest call(String method, String path, String authorization) {
		MockHttpServletRequest req = new MockHttpServletRequest(method, path);
		req.setServerName("127.0.0.1");
		req.setServerPort(8080);
		if (authorization != null) {
			req.addHeader("Authorization", authorization);
		}
		return req;
	}

	/** The response, and whether the request reached the next element of the chain. */
	private record Outcome(MockHttpServletResponse resp, boolean passed) {}

	private Outcome run(MockHttpServletRequest req) throws Exception {
		MockHttpServletResponse resp = new MockHttpServletResponse();
		MockFilterChain chain = new MockFilterChain();
		filter.doFilter(req, resp, chain);
		return new Outcome(resp, chain.getRequest() != null);
	}

	private void assertRefused(Outcome o, String reason) throws Exception {
		assertFalse(o.passed(), "a refused call must not reach the servlet");
		assertEquals(401, o.resp().getStatus());
		assertEquals("Bearer error=\"invalid_token\"", o.resp().getHeader("WWW-Authenticate"));
		assertTrue(o.resp().getContentType().startsWith("application/json"));
		String body = o.resp().getContentAsString();
		assertTrue(body.startsWith("{\"error\": \"unauthorized: "), body);
		assertTrue(body.contains(reason), body);
	}

	/** Verify that a call without a bearer token is refused, whatever else the Authorization header holds. */
	@Test
	void tokenRequired() throws Exception {
		assertRefused(run(call("POST", "/cds-services/gl-treatment", null)), "a CDS Hooks JWT is required");
		assertRefused(run(call("POST", "/cds-services/gl-treatment", "Basic dXNlcjpwdw==")), "JWT is required");
		assertRefused(run(call("POST", "/cds-services/gl-treatment", "Bearer ")), "JWT is required");
	}

	/** Verify that the verifier's reason is the answer, and the token is never echoed. */
	@Test
	void verifierReasonWithoutTheToken() throws Exception {
		String token = sign(f.k2, claims().build(), null);
		Outcome o = run(call("POST", "/cds-services/gl-treatment", "Bearer " + token));
		assertRefused(o, "signature does not verify");
		String body = o.resp().getContentAsString();
		assertFalse(body.contains(token) || body.contains(token.split("\\.")[1]), body);
	}

	/** Verify that a good token passes, and the bearer scheme is case-insensitive. */
	@Test
	void goodTokenPasses() throws Exception {
		assertTrue(run(call("POST", "/cds-services/gl-treatment", "Bearer " + sign(f.k1, claims().build(), null))).passed());
		assertTrue(run(call("POST", "/cds-services/gl-treatment", "bearer " + sign(f.k1, claims().build(), null))).passed());
	}

	/** Verify that feedback is signed for the service URL or for the feedback URL itself. */
	@Test
	void feedbackAudiences() throws Exception {
		String path = "/cds-services/gl-treatment/feedback";
		assertTrue(run(call("POST", path, "Bearer " + sign(f.k1, claims().build(), null))).passed());
		String own = "http://127.0.0.1:8080" + path;
		assertTrue(run(call("POST", path, "Bearer " + sign(f.k1, claims().audience(own).build(), null))).passed());
	}

	/** Verify that behind a proxy the aud is built from the public base URL, not from the URL the request came in at. */
	@Test
	void publicBaseUrl() throws Exception {
		filter = new CdsJwtFilter(f.verifier(1000), "https://cds.example.org/base/");
		String local = "Bearer " + sign(f.k1, claims().build(), null);
		assertRefused(run(call("POST", "/cds-services/gl-treatment", local)),
				"aud is not this service's URL (https://cds.example.org/base/cds-services/gl-treatment)");
		String pub = "Bearer " + sign(f.k1, claims().audience("https://cds.example.org/base/cds-services/gl-treatment").build(), null);
		assertTrue(run(call("POST", "/cds-services/gl-treatment", pub)).passed());
	}

	/** Verify that discovery, CORS preflight and everything outside /cds-services/ are not checked. */
	@Test
	void openPaths() throws Exception {
		assertTrue(run(call("GET", "/cds-services/", null)).passed());
		assertTrue(run(call("GET", "/cds-services", null)).passed());
		assertTrue(run(call("OPTIONS", "/cds-services/gl-treatment", null)).passed());
		assertTrue(run(call("GET", "/fhir/metadata", null)).passed());
	}

	/** Verify that without a verifier (no issuers file) nothing is checked. */
	@Test
	void offWithoutVerifier() throws Exception {
		filter = new CdsJwtFilter(null, "");
		assertTrue(run(call("POST", "/cds-services/gl-treatment", null)).passed());
	}

	private static GuidelineProperties.Cds cds(String issuersFile) {
		return new GuidelineProperties.Cds(10, "gl-treatment", "GLPathway", "", issuersFile, "", false, false,
				new GuidelineProperties.Jwt(60, 300), GuidelineProperties.Evaluation.CORE);
	}

	/** Verify that without issuers the filter is off on 127.0.0.1 (and ::1) and the start-up stops elsewhere. */
	@Test
	void startWithoutIssuers() throws Exception {
		assertNull(CdsJwtFilter.fromSettings(cds(""), InetAddress.getByName("127.0.0.1")).verifierForTests());
		assertNull(CdsJwtFilter.fromSettings(cds(""), InetAddress.getByName("::1")).verifierForTests());
		IllegalStateException e = assertThrows(IllegalStateException.class,
				() -> CdsJwtFilter.fromSettings(cds(""), InetAddress.getByName("127.0.0.2")));
		assertTrue(e.getMessage().contains("binds to 127.0.0.2 but no trusted-issuers file is set"), e.getMessage());
		assertThrows(IllegalStateException.class, () -> CdsJwtFilter.fromSettings(cds(""), null));
	}

	/** Verify that an issuers file is loaded (and checked) at start: a broken one stops the start-up. */
	@Test
	void startWithIssuers() throws Exception {
		assertNotNull(CdsJwtFilter.fromSettings(cds(f.issuersFile.toString()), null).verifierForTests());
		Path broken = dir.resolve("broken.json");
		Files.writeString(broken, "{\"issuers\": []}");
		assertThrows(IllegalStateException.class, () -> CdsJwtFilter.fromSettings(cds(broken.toString()), null));
	}

	/** Verify that a call that passes is checked against the service URL the request names. */
	@Test
	void serviceUrlFromTheRequest() throws Exception {
		String other = "Bearer " + sign(f.k1, claims().build(), null); // aud = gl-treatment
		assertRefused(run(call("POST", "/cds-services/gl-rec-1", other)), "aud is not this service's URL (" + SERVICE_URL.replace("gl-treatment", "gl-rec-1") + ")");
	}
}
