package org.example.gl.server;

import ca.uhn.fhir.jpa.cache.IResourceChangeListenerCacheRefresher;
import ca.uhn.fhir.jpa.cache.IResourceChangeListenerRegistry;
import jakarta.servlet.Filter;
import javax.sql.DataSource;
import org.opencds.cqf.fhir.cql.EvaluationSettings;
import org.springframework.boot.autoconfigure.web.ServerProperties;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Lazy;
import org.springframework.core.Ordered;

/**
 * Every servlet filter of the server, registered here and only here, each on the URL patterns it serves and at its
 * own place in the chain. The order (lowest first) and why:
 *
 * <ol>
 *   <li>{@link ReadinessFilter}, all paths: 503 while starting, before anything else answers (a readiness probe must
 *       not see 401 or a half-registered FHIR server).
 *   <li>{@link CorsFilter}, /cds-services[/*]: answers a CORS preflight (which carries no token) before the token
 *       checks, and puts the CORS headers on their 401s too, so a browser client can read why.
 *   <li>{@link BearerTokenFilter}, all paths: the write token (or, for a test EHR, the token on every request).
 *   <li>{@link CdsJwtFilter}, /cds-services/*: a CDS call's JWT, before the servlet reads the body (nothing is
 *       evaluated for a refused call).
 *   <li>{@link ForwardedPortFilter}, all paths: the port the proxy was called on, for the CDS servlet's "is
 *       fhirServer this server?" test; after the checks, which do not read it, so a refused call is not wrapped.
 *   <li>{@link KnowledgeFreshnessFilter}, /fhir/* and /cds-services[/*]: the knowledge-cache check, last, so only
 *       calls that will be evaluated pay for its database query, and none waits on its lock before being refused.
 * </ol>
 *
 * Each filter still checks its own paths (e.g. discovery stays open in the JWT filter), so a pattern here that is
 * wider than the filter's rule changes nothing. The orders sit right after Spring's character-encoding filter
 * ({@link Ordered#HIGHEST_PRECEDENCE}) and before its request-wrapping filters, as they always did; they are
 * distinct, so the sequence is defined (the JWT and forwarded-port filters once shared a value).
 */
@Configuration
public class FilterConfig {
	/** Where the first of these filters sits; the rest follow at steps of ten. */
	static final int FIRST = Ordered.HIGHEST_PRECEDENCE + 10;
	// the URL patterns: every request, the CDS Hooks endpoints (discovery and calls), CDS calls only, evaluations
	static final String[] ALL = {"/*"};
	static final String[] CDS = {"/cds-services", "/cds-services/*"};
	static final String[] CDS_CALLS = {"/cds-services/*"};
	static final String[] FHIR_AND_CDS = {"/fhir/*", "/cds-services", "/cds-services/*"};

	/** The readiness filter is a bean of its own: it learns that start-up finished from the application event. */
	@Bean
	public ReadinessFilter readinessFilter() {
		return new ReadinessFilter();
	}

	/** 1: 503 until started. */
	@Bean
	public FilterRegistrationBean<ReadinessFilter> readinessFilterRegistration(ReadinessFilter filter) {
		return register(filter, "readiness", 0, ALL);
	}

	/** 2: CORS for the CDS Hooks endpoints. */
	@Bean
	public FilterRegistrationBean<CorsFilter> corsFilterRegistration() {
		return register(new CorsFilter(), "cors", 1, CDS);
	}

	/** 3: the bearer-token checks of guideline.require-token-file / guideline.write-token-file. */
	@Bean
	public FilterRegistrationBean<BearerTokenFilter> bearerTokenFilterRegistration(
			GuidelineProperties props, ServerProperties server) {
		BearerTokenFilter filter =
				new BearerTokenFilter(props.requireTokenFile(), props.writeTokenFile(), server.getAddress());
		return register(filter, "bearer-token", 2, ALL);
	}

	/** 4: the CDS Hooks JWT check (off without guideline.cds.issuers-file, on 127.0.0.1 only). */
	@Bean
	public FilterRegistrationBean<CdsJwtFilter> cdsJwtFilterRegistration(
			GuidelineProperties props, ServerProperties server) {
		return register(CdsJwtFilter.fromSettings(props.cds(), server.getAddress()), "cds-jwt", 3, CDS_CALLS);
	}

	/** 5: X-Forwarded-Port from the local proxy as the local port. */
	@Bean
	public FilterRegistrationBean<ForwardedPortFilter> forwardedPortFilterRegistration() {
		return register(new ForwardedPortFilter(), "forwarded-port", 4, ALL);
	}

	/**
	 * 6: knowledge freshness on evaluation requests. HAPI's listener registry and refresher are lazy: filters are
	 * created with the web server, before HAPI's JPA beans they depend on.
	 */
	@Bean
	public FilterRegistrationBean<KnowledgeFreshnessFilter> knowledgeFreshnessFilterRegistration(
			DataSource dataSource,
			EvaluationSettings settings,
			@Lazy IResourceChangeListenerRegistry registry,
			@Lazy IResourceChangeListenerCacheRefresher refresher,
			KnowledgeCache knowledge) {
		KnowledgeFreshnessFilter filter = new KnowledgeFreshnessFilter(dataSource, settings, registry, refresher, knowledge);
		return register(filter, "knowledge-freshness", 5, FHIR_AND_CDS);
	}

	private static <F extends Filter> FilterRegistrationBean<F> register(F filter, String name, int place, String[] urls) {
		FilterRegistrationBean<F> reg = new FilterRegistrationBean<>(filter);
		reg.setName(name);
		reg.setOrder(FIRST + 10 * place);
		reg.addUrlPatterns(urls);
		return reg;
	}
}
