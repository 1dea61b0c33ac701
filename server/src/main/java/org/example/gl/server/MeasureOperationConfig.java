package org.example.gl.server;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.FhirVersionEnum;
import ca.uhn.fhir.rest.api.server.IRepositoryFactory;
import ca.uhn.fhir.rest.server.RestfulServer;
import java.util.List;
import java.util.Map;
import org.opencds.cqf.fhir.cql.EvaluationSettings;
import org.opencds.cqf.fhir.cr.hapi.common.StringTimePeriodHandler;
import org.opencds.cqf.fhir.cr.hapi.config.ProviderLoader;
import org.opencds.cqf.fhir.cr.hapi.config.ProviderSelector;
import org.opencds.cqf.fhir.cr.hapi.r4.R4MeasureEvaluatorMultipleFactory;
import org.opencds.cqf.fhir.cr.hapi.r4.R4MeasureEvaluatorSingleFactory;
import org.opencds.cqf.fhir.cr.hapi.r4.measure.MeasureOperationsProvider;
import org.opencds.cqf.fhir.cr.measure.MeasureEvaluationOptions;
import org.opencds.cqf.fhir.cr.measure.common.MeasurePeriodValidator;
import org.opencds.cqf.fhir.cr.measure.r4.R4MultiMeasureService;
import org.springframework.context.ApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * Measure/$evaluate-measure (and Measure/$evaluate) for the package's indicator Measures (issue 26).
 *
 * <p>The same beans CR's CrR4Config defines for these two operations, without the rest of CrR4Config (care gaps,
 * CRMI authoring, submit/collect data and their settings): the measure evaluator on this server's repository and
 * the CQL settings $apply uses, and the provider registered into the RestfulServer by CR's ProviderLoader. The period
 * handler and validator are CrBaseConfig's (imported with the other operation configs).
 */
@Configuration
public class MeasureOperationConfig {

	/** The measure evaluation runs the CQL with the same settings (caches, offline terminology) as $apply. */
	@Bean
	MeasureEvaluationOptions measureEvaluationOptions(EvaluationSettings settings) {
		MeasureEvaluationOptions options = MeasureEvaluationOptions.defaultOptions();
		options.setEvaluationSettings(settings);
		return options;
	}

	@Bean
	R4MeasureEvaluatorSingleFactory r4MeasureEvaluatorSingleFactory(
			IRepositoryFactory repositories, MeasureEvaluationOptions options, MeasurePeriodValidator validator) {
		return rd -> new R4MultiMeasureService(repositories.create(rd), options, rd.getFhirServerBase(), validator);
	}

	@Bean
	R4MeasureEvaluatorMultipleFactory r4MeasureEvaluatorMultipleFactory(
			IRepositoryFactory repositories, MeasureEvaluationOptions options, MeasurePeriodValidator validator) {
		return rd -> new R4MultiMeasureService(repositories.create(rd), options, rd.getFhirServerBase(), validator);
	}

	@Bean
	MeasureOperationsProvider r4MeasureOperationsProvider(
			R4MeasureEvaluatorSingleFactory single,
			R4MeasureEvaluatorMultipleFactory multiple,
			StringTimePeriodHandler periods) {
		return new MeasureOperationsProvider(single, multiple, periods);
	}

	@Bean
	public ProviderLoader measureOperationLoader(ApplicationContext context, FhirContext fhir, RestfulServer server) {
		ProviderSelector selector =
				new ProviderSelector(fhir, Map.of(FhirVersionEnum.R4, List.of(MeasureOperationsProvider.class)));
		return new ProviderLoader(server, context, selector);
	}
}
