package org.example.gl.server;

import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.net.InetAddress;
import java.nio.file.Path;
import java.time.Clock;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.web.filter.OncePerRequestFilter;

/**
 * CDS Hooks security: every call to a service ({@code POST /cds-services/{id}}) and to its feedback endpoint needs
 * {@code Authorization: Bearer <JWT>} signed by a trusted issuer (see {@link CdsJwtVerifier}); otherwise 401 with a
 * short reason, before the servlet reads the body, so nothing is evaluated. Discovery ({@code GET /cds-services})
 * stays open: it holds no patient data and EHRs read it before they hold a registration. CORS preflight is answered
 * by {@link CorsFilter} first (a preflight carries no token).
 *
 * <p>Configuration ({@code -D} or application.yaml): {@code guideline.cds.issuers-file} (the trusted-issuers file,
 * see {@link TrustedIssuers}; scripts/server --cds-issuers); {@code guideline.cds.public-base-url} (the base URL
 * EHRs call, e.g. behind a reverse proxy, from which the expected {@code aud} is built; default: this request's
 * own URL); {@code guideline.cds.jwt.skew-seconds} (60) and {@code guideline.cds.jwt.max-lifetime-seconds} (300).
 * Without an issuers file the filter is off, which is allowed only when the server binds to 127.0.0.1 (the local
 * demo); any other bind address without it stops the start-up with a message. Registered by {@link FilterConfig}
 * after {@link CorsFilter} (preflight, and CORS headers on the 401 too).
 */
public class CdsJwtFilter extends OncePerRequestFilter {
	private static final Logger ourLog = LoggerFactory.getLogger(CdsJwtFilter.class);
	private static final String PREFIX = "/cds-services/";
	/** The addresses (as {@link InetAddress#getHostAddress}) where unauthenticated calls are allowed: 127.0.0.1, ::1. */
	private static final Set<String> LOCAL_ONLY = Set.of("127.0.0.1", "0:0:0:0:0:0:0:1");
	private static final int REPLAY_CACHE_MAX = 100_000;

	private final CdsJwtVerifier verifier;
	private final String publicBase;

	/**
	 * The filter with {@code verifier} (null: off, calls not authenticated) and {@code publicBaseUrl} ("" = each
	 * request's own URL) as the base of the expected {@code aud}.
	 */
	CdsJwtFilter(CdsJwtVerifier verifier, String publicBaseUrl) {
		this.verifier = verifier;
		this.publicBase = publicBaseUrl.replaceAll("/+$", "");
	}

	/**
	 * The filter as {@code cds} configures it for a server listening on {@code address} (null: every interface):
	 * the trusted issuers loaded and checked now, or, without an issuers file, off, which only a server on
	 * 127.0.0.1 may be (else an IllegalStateException that stops the start-up).
	 */
	public static CdsJwtFilter fromSettings(GuidelineProperties.Cds cds, InetAddress address) {
		String issuersFile = cds.issuersFile();
		String publicBase = cds.publicBaseUrl().replaceAll("/+$", "");
		if (issuersFile.isBlank()) {
			if (address == null || !LOCAL_ONLY.contains(address.getHostAddress())) {
				String msg = "CDS Hooks: the server binds to " + BearerTokenFilter.shown(address)
						+ " but no trusted-issuers file is set; "
						+ "signed requests are required off 127.0.0.1: give guideline.cds.issuers-file "
						+ "(scripts/server start --cds-issuers FILE or GUIDELINE_CDS_ISSUERS)";
				ourLog.error(msg);
				throw new IllegalStateException(msg);
			}
			ourLog.warn("CDS Hooks: calls are NOT authenticated (local demo on 127.0.0.1; "
					+ "give a trusted-issuers file to require signed JWTs)");
			return new CdsJwtFilter(null, publicBase);
		}
		TrustedIssuers issuers;
		try {
			issuers = TrustedIssuers.load(Path.of(issuersFile));
		} catch (IllegalStateException e) {
			ourLog.error("CDS Hooks: {}", e.getMessage());
			throw e;
		}
		CdsJwtVerifier verifier = new CdsJwtVerifier(issuers, new ReplayCache(REPLAY_CACHE_MAX),
				cds.jwt().skewSeconds(), cds.jwt().maxLifetimeSeconds(), Clock.systemUTC());
		ourLog.info("CDS Hooks: signed JWT required on service calls ({} trusted issuer(s) from {}; aud = {})",
				issuers.size(), issuersFile, publicBase.isEmpty() ? "the request's own URL" : publicBase + PREFIX + "{id}");
		return new CdsJwtFilter(verifier, publicBase);
	}

	/** The verifier in use, null when calls are not authenticated (for the tests of {@link #fromSettings}). */
	CdsJwtVerifier verifierForTests() {
		return verifier;
	}

	@Override
	protected boolean shouldNotFilter(HttpServletRequest request) {
		if (verifier == null || "OPTIONS".equals(request.getMethod())) {
			return true;
		}
		String path = request.getRequestURI().substring(request.getContextPath().length());
		return !path.startsWith(PREFIX) || path.length() == PREFIX.length(); // discovery stays open
	}

	@Override
	protected void doFilterInternal(HttpServletRequest req, HttpServletResponse resp, FilterChain chain)
			throws ServletException, IOException {
		String header = req.getHeader("Authorization");
		String reason;
		if (header == null || !header.regionMatches(true, 0, "Bearer ", 0, 7) || header.length() == 7) {
			reason = "a CDS Hooks JWT is required (Authorization: Bearer <JWT>)";
		} else {
			try {
				verifier.verify(header.substring(7).strip(), audiences(req));
				chain.doFilter(req, resp);
				return;
			} catch (CdsJwtVerifier.Rejected e) {
				reason = e.getMessage();
			}
		}
		ourLog.info("CDS call {} {} refused: {}", req.getMethod(), CdsJwtVerifier.clip(req.getRequestURI()), reason);
		resp.setStatus(HttpServletResponse.SC_UNAUTHORIZED);
		resp.setHeader("WWW-Authenticate", "Bearer error=\"invalid_token\"");
		resp.setContentType("application/json;charset=UTF-8");
		resp.getWriter().write("{\"error\": " + jsonString("unauthorized: " + reason) + "}");
	}

	/** The service URL (the aud EHRs must sign), then this request's own URL (accepted for feedback calls). */
	private List<String> audiences(HttpServletRequest req) {
		String path = req.getRequestURI().substring(req.getContextPath().length());
		String rest = path.substring(PREFIX.length());
		int slash = rest.indexOf('/');
		String id = slash < 0 ? rest : rest.substring(0, slash);
		String base;
		if (!publicBase.isEmpty()) {
			base = publicBase;
		} else {
			String url = req.getRequestURL().toString();
			base = url.substring(0, url.indexOf(PREFIX));
		}
		List<String> out = new ArrayList<>();
		out.add(base + PREFIX + id);
		if (slash >= 0) {
			out.add(base + path);
		}
		return out;
	}

	private static String jsonString(String s) {
		return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
	}
}
