package org.example.gl.server;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.nimbusds.jose.jwk.JWK;
import com.nimbusds.jose.jwk.JWKSet;
import com.nimbusds.jose.jwk.KeyType;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.text.ParseException;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The CDS Hooks trusted-issuers file: for each EHR allowed to call our services, its {@code iss}, its public keys
 * (a JWKS file) and the {@code jku} URLs its tokens may name (an exact allow-list). Format:
 *
 * <pre>{"issuers": [{"iss": "https://ehr.example.org", "jwks": "ehr.jwks.json",
 *                   "jku": ["https://ehr.example.org/.well-known/jwks.json"]}]}</pre>
 *
 * {@code jwks} is relative to the issuers file; at least one of {@code jwks} and {@code jku} per issuer. A JWKS that
 * holds a private or symmetric key is refused (only public EC/RSA keys verify CDS Hooks JWTs).
 *
 * <p>A {@code jku} key set is fetched with a timeout, without following redirects, over verified TLS (the JVM's trust
 * store); plain http only for a loopback host (tests). It is cached for {@link #JKU_TTL} and re-read at most every
 * {@link #JKU_MIN_REFRESH} when a token names a key it does not hold (key rotation).
 */
final class TrustedIssuers {
	static final Duration JKU_TTL = Duration.ofMinutes(5);
	static final Duration JKU_MIN_REFRESH = Duration.ofSeconds(30);
	private static final Duration JKU_TIMEOUT = Duration.ofSeconds(5);
	private static final int JKU_MAX_BYTES = 256 * 1024;

	/** One trusted issuer: its keys from the file (null when it only uses jku) and its allowed jku URLs. */
	record Issuer(String iss, JWKSet keys, Set<String> jku) {}

	private record Fetched(JWKSet keys, long atMillis) {}

	private final Map<String, Issuer> byIss;
	private final Map<String, Fetched> jkuCache = new ConcurrentHashMap<>();
	private final HttpClient http = HttpClient.newBuilder()
			.connectTimeout(JKU_TIMEOUT)
			.followRedirects(HttpClient.Redirect.NEVER)
			.build();

	private TrustedIssuers(Map<String, Issuer> byIss) {
		this.byIss = byIss;
	}

	/** Read and check the issuers file; any problem is an IllegalStateException naming the file and what to fix. */
	static TrustedIssuers load(Path file) {
		JsonNode root;
		try {
			root = new ObjectMapper().readTree(Files.readString(file, StandardCharsets.UTF_8));
		} catch (IOException e) {
			throw new IllegalStateException("cannot read the CDS trusted-issuers file " + file + ": " + e.getMessage());
		}
		JsonNode list = root == null ? null : root.get("issuers");
		if (list == null || !list.isArray() || list.isEmpty()) {
			throw new IllegalStateException(file + ": expected {\"issuers\": [{\"iss\": ..., \"jwks\": FILE, "
					+ "\"jku\": [URL, ...]}, ...]} with at least one issuer");
		}
		Map<String, Issuer> out = new LinkedHashMap<>();
		for (int i = 0; i < list.size(); i++) {
			Issuer issuer = issuer(file, i, list.get(i));
			if (out.put(issuer.iss(), issuer) != null) {
				throw new IllegalStateException(file + ": issuers[" + i + "]: iss '" + issuer.iss() + "' is listed twice");
			}
		}
		return new TrustedIssuers(out);
	}

	private static Issuer issuer(Path file, int i, JsonNode node) {
		String where = file + ": issuers[" + i + "]";
		String iss = node.path("iss").asText("");
		if (iss.isBlank()) {
			throw new IllegalStateException(where + ": needs \"iss\" (the issuer the EHR puts in its tokens)");
		}
		Set<String> jku = new LinkedHashSet<>();
		for (JsonNode u : node.path("jku")) {
			String url = u.asText("");
			checkJkuUrl(where, url);
			jku.add(url);
		}
		JWKSet keys = null;
		String jwks = node.path("jwks").asText("");
		if (!jwks.isBlank()) {
			Path p = file.toAbsolutePath().getParent().resolve(jwks);
			try {
				keys = publicOnly(where + " (" + p + ")", JWKSet.parse(Files.readString(p, StandardCharsets.UTF_8)));
			} catch (IOException | ParseException e) {
				throw new IllegalStateException(where + ": cannot read JWKS " + p + ": " + e.getMessage());
			}
		}
		if (keys == null && jku.isEmpty()) {
			throw new IllegalStateException(where + ": needs \"jwks\" (a JWKS file) or \"jku\" (allowed key-set URLs)");
		}
		return new Issuer(iss, keys, Set.copyOf(jku));
	}

	private static void checkJkuUrl(String where, String url) {
		try {
			URI uri = URI.create(url);
			boolean https = "https".equals(uri.getScheme());
			boolean loopbackHttp = "http".equals(uri.getScheme()) && isLoopback(uri.getHost());
			if (!(https || loopbackHttp) || uri.getHost() == null) {
				throw new IllegalStateException(where + ": jku '" + url + "' must be an https URL (http only on loopback)");
			}
		} catch (IllegalArgumentException e) {
			throw new IllegalStateException(where + ": jku '" + url + "' is not a URL");
		}
	}

	static boolean isLoopback(String host) {
		return host != null && (host.equals("localhost") || host.startsWith("127.") || host.equals("[::1]")
				|| host.equals("::1"));
	}

	private static JWKSet publicOnly(String where, JWKSet set) {
		for (JWK k : set.getKeys()) {
			if (k.isPrivate() || KeyType.OCT.equals(k.getKeyType())) {
				throw new IllegalStateException(where + ": holds a private or symmetric key (kid " + k.getKeyID()
						+ "); list only the issuer's public keys");
			}
		}
		return set;
	}

	/** The trusted issuer named {@code iss}, or null. */
	Issuer get(String iss) {
		return iss == null ? null : byIss.get(iss);
	}

	/** How many issuers are trusted. */
	int size() {
		return byIss.size();
	}

	/**
	 * The key set at an allowed {@code jku} (cached); {@code refresh} asks for a re-read when the cached copy lacks
	 * the token's key, honoured at most every {@link #JKU_MIN_REFRESH}.
	 */
	JWKSet jku(String url, boolean refresh) throws CdsJwtVerifier.Rejected {
		long now = System.currentTimeMillis();
		Fetched cached = jkuCache.get(url);
		if (cached != null) {
			long age = now - cached.atMillis();
			boolean fresh = age < JKU_TTL.toMillis() && !(refresh && age >= JKU_MIN_REFRESH.toMillis());
			if (fresh) {
				return cached.keys();
			}
		}
		Fetched got = new Fetched(fetch(url), now);
		jkuCache.put(url, got);
		return got.keys();
	}

	private JWKSet fetch(String url) throws CdsJwtVerifier.Rejected {
		try {
			HttpRequest req = HttpRequest.newBuilder(URI.create(url)).timeout(JKU_TIMEOUT)
					.header("Accept", "application/json").GET().build();
			HttpResponse<byte[]> resp = http.send(req, HttpResponse.BodyHandlers.ofByteArray());
			if (resp.statusCode() != 200) {
				throw new CdsJwtVerifier.Rejected("the jku key set answered HTTP " + resp.statusCode());
			}
			if (resp.body().length > JKU_MAX_BYTES) {
				throw new CdsJwtVerifier.Rejected("the jku key set is larger than " + JKU_MAX_BYTES + " bytes");
			}
			return publicOnly("jku " + url, JWKSet.parse(new String(resp.body(), StandardCharsets.UTF_8)));
		} catch (IOException | IllegalStateException | ParseException e) {
			throw new CdsJwtVerifier.Rejected("the jku key set could not be read (" + e.getClass().getSimpleName() + ")");
		} catch (InterruptedException e) {
			Thread.currentThread().interrupt();
			throw new CdsJwtVerifier.Rejected("interrupted while reading the jku key set");
		}
	}
}
