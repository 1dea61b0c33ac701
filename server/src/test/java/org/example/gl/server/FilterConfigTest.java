package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.net.InetAddress;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.springframework.boot.autoconfigure.web.ServerProperties;
import org.springframework.boot.web.servlet.FilterRegistrationBean;

/** The filter chain as FilterConfig registers it: the documented sequence, distinct orders, each on its paths. */
class FilterConfigTest {
	private final FilterConfig config = new FilterConfig();

	private static GuidelineProperties props() {
		return new GuidelineProperties("", "", "", null, new GuidelineProperties.Cds(10, "gl-treatment", "GLPathway", "",
				"", "", false, false, new GuidelineProperties.Jwt(60, 300), GuidelineProperties.Evaluation.CORE),
				new GuidelineProperties.BulkExport(true, 5));
	}

	private List<FilterRegistrationBean<?>> registrations() throws Exception {
		ServerProperties server = new ServerProperties();
		server.setAddress(InetAddress.getByName("127.0.0.1"));
		return List.of(
				config.readinessFilterRegistration(config.readinessFilter()),
				config.corsFilterRegistration(),
				config.bearerTokenFilterRegistration(props(), server),
				config.cdsJwtFilterRegistration(props(), server),
				config.forwardedPortFilterRegistration(),
				config.knowledgeFreshnessFilterRegistration(null, null, null, null, null));
	}

	/** Verify the sequence: readiness, CORS, bearer token, CDS JWT, forwarded port, knowledge freshness; no ties. */
	@Test
	void sequence() throws Exception {
		List<FilterRegistrationBean<?>> regs = registrations();
		List<String> byOrder = regs.stream()
				.sorted(java.util.Comparator.comparingInt(FilterRegistrationBean::getOrder))
				.map(FilterRegistrationBean::getFilterName)
				.toList();
		assertEquals(List.of("readiness", "cors", "bearer-token", "cds-jwt", "forwarded-port", "knowledge-freshness"), byOrder);
		assertEquals(regs.size(), regs.stream().map(FilterRegistrationBean::getOrder).distinct().count());
	}

	/** Verify that each filter is mapped to the paths its own checks cover. */
	@Test
	void urlPatterns() throws Exception {
		List<FilterRegistrationBean<?>> regs = registrations();
		assertEquals(Set.of("/*"), Set.copyOf(regs.get(0).getUrlPatterns()));
		assertEquals(Set.of("/cds-services", "/cds-services/*"), Set.copyOf(regs.get(1).getUrlPatterns()));
		assertEquals(Set.of("/*"), Set.copyOf(regs.get(2).getUrlPatterns()));
		assertEquals(Set.of("/cds-services/*"), Set.copyOf(regs.get(3).getUrlPatterns()));
		assertEquals(Set.of("/*"), Set.copyOf(regs.get(4).getUrlPatterns()));
		assertEquals(Set.of("/fhir/*", "/cds-services", "/cds-services/*"), Set.copyOf(regs.get(5).getUrlPatterns()));
	}
}
