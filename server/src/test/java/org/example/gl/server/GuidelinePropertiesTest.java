package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import org.junit.jupiter.api.Test;
import org.springframework.boot.context.properties.bind.Binder;
import org.springframework.boot.env.YamlPropertySourceLoader;
import org.springframework.core.env.MapPropertySource;
import org.springframework.core.env.PropertySource;
import org.springframework.core.env.StandardEnvironment;
import org.springframework.core.io.ClassPathResource;

/**
 * The settings as the server binds them: application.yaml's defaults, the documented -D names and the GUIDELINE_DB_*
 * environment variables, without starting Spring.
 */
class GuidelinePropertiesTest {
	private static GuidelineProperties bind(Map<String, Object> options, Map<String, Object> environment) throws Exception {
		StandardEnvironment env = new StandardEnvironment();
		env.getPropertySources().addFirst(new MapPropertySource("environment", environment));
		env.getPropertySources().addFirst(new MapPropertySource("options", options));
		for (PropertySource<?> ps : new YamlPropertySourceLoader().load("yaml", new ClassPathResource("application.yaml"))) {
			env.getPropertySources().addLast(ps);
		}
		return Binder.get(env).bind("guideline", GuidelineProperties.class).get();
	}

	/** Verify that application.yaml alone gives the documented defaults, and every text is "" rather than null. */
	@Test
	void defaults() throws Exception {
		GuidelineProperties p = bind(Map.of(), Map.of());
		assertEquals("", p.dataDir());
		assertEquals("", p.requireTokenFile());
		assertEquals("", p.writeTokenFile());
		assertFalse(p.db().postgres());
		assertEquals("", p.db().passwordFile());
		assertEquals(10, p.cds().fhirServerTimeoutSeconds());
		assertEquals("gl-treatment", p.cds().pathwayServiceId());
		assertEquals("GLPathway", p.cds().pathwayPlanDefinition());
		assertEquals("", p.cds().siteBaseUrl());
		assertEquals("", p.cds().issuersFile());
		assertEquals("", p.cds().publicBaseUrl());
		assertFalse(p.cds().informationalCards());
		assertFalse(p.cds().prefetchIncludeMedication());
		assertEquals(60, p.cds().jwt().skewSeconds());
		assertEquals(300, p.cds().jwt().maxLifetimeSeconds());
		assertEquals(GuidelineProperties.Evaluation.CORE, p.cds().evaluator());
		assertTrue(p.bulkExport().enabled());
		assertEquals(5, p.bulkExport().jobStepSeconds());
	}

	/** Verify that guideline.cds.evaluator selects the old $apply path by its documented name. */
	@Test
	void evaluatorSetting() throws Exception {
		assertEquals(GuidelineProperties.Evaluation.APPLY,
				bind(Map.of("guideline.cds.evaluator", "apply"), Map.of()).cds().evaluator());
		assertEquals(GuidelineProperties.Evaluation.CORE,
				bind(Map.of("guideline.cds.evaluator", "core"), Map.of()).cds().evaluator());
	}

	/** Verify that the names scripts/server and the README use (-D guideline.*) set what they say. */
	@Test
	void documentedOptionNames() throws Exception {
		GuidelineProperties p = bind(Map.of(
				"guideline.data-dir", "/data",
				"guideline.require-token-file", "/ehr-token",
				"guideline.write-token-file", "/write-token",
				"guideline.cds.issuers-file", "/issuers.json",
				"guideline.cds.public-base-url", "https://cds.example.org",
				"guideline.cds.site-base-url", "https://site.example.org",
				"guideline.cds.fhir-server-timeout-seconds", "3",
				"guideline.cds.informational-cards", "true",
				"guideline.cds.jwt.skew-seconds", "5",
				"guideline.cds.jwt.max-lifetime-seconds", "120"), Map.of());
		assertEquals("/data", p.dataDir());
		assertEquals("/ehr-token", p.requireTokenFile());
		assertEquals("/write-token", p.writeTokenFile());
		assertEquals("/issuers.json", p.cds().issuersFile());
		assertEquals("https://cds.example.org", p.cds().publicBaseUrl());
		assertEquals("https://site.example.org", p.cds().siteBaseUrl());
		assertEquals(3, p.cds().fhirServerTimeoutSeconds());
		assertTrue(p.cds().informationalCards());
		assertEquals(5, p.cds().jwt().skewSeconds());
		assertEquals(120, p.cds().jwt().maxLifetimeSeconds());
	}

	/** Verify that guideline.cds.prefetch-include-medication (documented in docs/cds-hooks.md) turns _include on. */
	@Test
	void prefetchIncludeMedication() throws Exception {
		assertTrue(bind(Map.of("guideline.cds.prefetch-include-medication", "true"), Map.of()).cds().prefetchIncludeMedication());
	}

	/** Verify that guideline.bulk-export.* turn $export off and set the batch step interval. */
	@Test
	void bulkExportOptions() throws Exception {
		GuidelineProperties p = bind(Map.of(
				"guideline.bulk-export.enabled", "false", "guideline.bulk-export.job-step-seconds", "2"), Map.of());
		assertFalse(p.bulkExport().enabled());
		assertEquals(2, p.bulkExport().jobStepSeconds());
	}

	/** Verify that the GUIDELINE_DB_* variables reach guideline.db.*, stripped as the environment may pad them. */
	@Test
	void databaseFromTheEnvironment() throws Exception {
		GuidelineProperties p = bind(Map.of(), Map.of(
				"GUIDELINE_DB_URL", " jdbc:postgresql://127.0.0.1:5432/guideline ",
				"GUIDELINE_DB_USER", "gl",
				"GUIDELINE_DB_PASSWORD_FILE", "/run/pw",
				"GUIDELINE_DB_PASSWORD", "secret"));
		assertTrue(p.db().postgres());
		assertEquals("jdbc:postgresql://127.0.0.1:5432/guideline", p.db().url());
		assertEquals("gl", p.db().user());
		assertEquals("/run/pw", p.db().passwordFile());
		assertEquals("secret", p.db().password());
		assertEquals("ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect", JpaServerConfig.dialect(p.db()));
	}
}
