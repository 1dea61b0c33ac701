package org.example.gl.server;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;
import org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.context.annotation.Import;

/**
 * Local HAPI FHIR R4 JPA server (H2) with Clinical Reasoning and CDS Hooks, for guideline development.
 *
 * <p>Wiring is split in two: {@link JpaServerConfig} (storage + the FHIR RestfulServer at /fhir/*) and
 * {@link ClinicalReasoningConfig} (CR operations, CDS Hooks at /cds-services). Nothing here reaches the network:
 * no IG/package installs, no remote terminology; the CQL engine uses its embedded FHIRHelpers/model info.
 */
@SpringBootApplication(
		// Quartz: HAPI schedules its own jobs; Elasticsearch client and Thymeleaf arrive transitively, unused
		exclude = {
			QuartzAutoConfiguration.class,
			ElasticsearchRestClientAutoConfiguration.class,
			ThymeleafAutoConfiguration.class
		})
// every guideline.* setting, bound once (application.yaml holds the defaults)
@EnableConfigurationProperties(GuidelineProperties.class)
@Import({
	// bean-defining configs first: CR's conditions look for the RestfulServer bean at parse time
	JpaServerConfig.class,
	ClinicalReasoningConfig.class,
	FilterConfig.class,
	// JPA DAOs need the subscription submitter/channel beans and batch2 (reindex, $merge) even if unused
	SubscriptionSubmitterConfig.class,
	SubscriptionChannelConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class
})
public class GuidelineServer {
	/** Starts the server (Spring Boot; settings from application.yaml, -D options and the environment). */
	public static void main(String[] args) {
		SpringApplication.run(GuidelineServer.class, args);
	}
}
