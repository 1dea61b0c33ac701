package org.example.gl.server;

import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletRequestWrapper;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.net.InetAddress;
import java.net.UnknownHostException;
import org.springframework.web.filter.OncePerRequestFilter;

/**
 * Behind the local reverse proxy (scripts/server start --nodes N), a CDS call's {@code fhirServer} names the proxy
 * (http://127.0.0.1:PROXY_PORT/fhir), which is this server's own data, but the node listens on another port. The CDS
 * endpoint recognises "this server" by host and local port; without this it fetched its own data again through the
 * proxy, and clinical reasoning, seeing every resource twice, silently returned no cards. HAProxy sends
 * {@code X-Forwarded-Port} (the port the client called); for requests from a loopback address (the proxy runs on
 * this machine) the local port is reported as that port. Registered by {@link FilterConfig}.
 */
public class ForwardedPortFilter extends OncePerRequestFilter {
	@Override
	protected boolean shouldNotFilter(HttpServletRequest request) {
		return request.getHeader("X-Forwarded-Port") == null || !isLoopback(request.getRemoteAddr());
	}

	private static boolean isLoopback(String address) {
		try {
			return InetAddress.getByName(address).isLoopbackAddress();
		} catch (UnknownHostException e) {
			return false;
		}
	}

	@Override
	protected void doFilterInternal(HttpServletRequest req, HttpServletResponse resp, FilterChain chain)
			throws ServletException, IOException {
		int port;
		try {
			port = Integer.parseInt(req.getHeader("X-Forwarded-Port").strip());
		} catch (NumberFormatException e) {
			chain.doFilter(req, resp);
			return;
		}
		chain.doFilter(
				new HttpServletRequestWrapper(req) {
					@Override
					public int getLocalPort() {
						return port;
					}
				},
				resp);
	}
}
