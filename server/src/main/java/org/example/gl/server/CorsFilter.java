package org.example.gl.server;

import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import org.springframework.web.filter.OncePerRequestFilter;

/**
 * CORS for the CDS Hooks endpoints, so a browser-based CDS client (e.g. the CDS Hooks sandbox) can call discovery
 * and services. CDS Hooks 2.0 asks services to allow any origin: callers are authenticated by the request's JWT,
 * never by cookies, so no credentials are allowed. Preflight (OPTIONS) is answered here with 204. Registered (and
 * ordered: before the token checks, a preflight carries no token) by {@link FilterConfig}.
 */
public class CorsFilter extends OncePerRequestFilter {
	@Override
	protected boolean shouldNotFilter(HttpServletRequest request) {
		String path = request.getRequestURI().substring(request.getContextPath().length());
		return !(path.equals("/cds-services") || path.startsWith("/cds-services/"));
	}

	@Override
	protected void doFilterInternal(HttpServletRequest req, HttpServletResponse resp, FilterChain chain)
			throws ServletException, IOException {
		resp.setHeader("Access-Control-Allow-Origin", "*");
		resp.setHeader("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
		resp.setHeader("Access-Control-Allow-Headers", "Authorization, Content-Type");
		resp.setHeader("Access-Control-Expose-Headers", "Origin, Accept, Content-Location, Location, X-Requested-With");
		if ("OPTIONS".equals(req.getMethod())) {
			resp.setHeader("Access-Control-Max-Age", "600");
			resp.setStatus(HttpServletResponse.SC_NO_CONTENT);
			return;
		}
		chain.doFilter(req, resp);
	}
}
