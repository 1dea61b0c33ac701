package org.example.gl.server;

import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.event.EventListener;
import org.springframework.web.filter.OncePerRequestFilter;

/**
 * Answers 503 until the application is fully started. Tomcat starts accepting requests slightly before the
 * ContextRefreshedEvent listeners that add the CR operations ($apply, $evaluate, ...) to the FHIR server have run;
 * without this, a readiness probe could see /fhir/metadata = 200 (and HAPI would cache that capability statement
 * for a minute) before $apply exists. A bean (for its ready event) registered first of all by {@link FilterConfig}.
 */
public class ReadinessFilter extends OncePerRequestFilter {
	private volatile boolean ready;

	/** The application has started: requests pass from now on. */
	@EventListener(ApplicationReadyEvent.class)
	public void onReady() {
		ready = true;
	}

	@Override
	protected void doFilterInternal(HttpServletRequest req, HttpServletResponse resp, FilterChain chain)
			throws ServletException, IOException {
		if (!ready) {
			resp.setHeader("Retry-After", "1");
			resp.sendError(HttpServletResponse.SC_SERVICE_UNAVAILABLE, "starting");
			return;
		}
		chain.doFilter(req, resp);
	}
}
