package org.example.gl.server;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.interceptor.model.RequestPartitionId;
import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.cache.IResourceChangeEvent;
import ca.uhn.fhir.jpa.cache.IResourceChangeListener;
import ca.uhn.fhir.jpa.cache.IResourceChangeListenerCacheRefresher;
import ca.uhn.fhir.jpa.cache.IResourceChangeListenerRegistry;
import ca.uhn.fhir.jpa.cache.ResourceChangeListenerRegistryInterceptor;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.searchparam.MatchUrlService;
import ca.uhn.fhir.rest.api.server.IRepositoryFactory;
import ca.uhn.fhir.jpa.searchparam.SearchParameterMap;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.hapi.fhir.cdshooks.api.ICdsHooksDaoAuthorizationSvc;
import ca.uhn.hapi.fhir.cdshooks.api.ICdsServiceRegistry;
import ca.uhn.hapi.fhir.cdshooks.config.CdsHooksConfig;
import ca.uhn.hapi.fhir.cdshooks.svc.CdsHooksContextBooter;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Stream;
import javax.sql.DataSource;
import ca.uhn.fhir.rest.api.server.SystemRequestDetails;
import org.hl7.fhir.instance.model.api.IIdType;
import ca.uhn.fhir.rest.param.UriParam;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.CodeSystem;
import org.opencds.cqf.fhir.cql.EvaluationSettings;
import org.opencds.cqf.fhir.cql.engine.retrieve.RetrieveSettings;
import org.opencds.cqf.fhir.cql.engine.terminology.TerminologySettings;
import org.opencds.cqf.fhir.cr.CrSettings;
import org.opencds.cqf.fhir.cr.hapi.config.CrCdsHooksConfig;
import org.opencds.cqf.fhir.cr.hapi.config.RepositoryConfig;
import org.opencds.cqf.fhir.cr.hapi.config.r4.ApplyOperationConfig;
import org.opencds.cqf.fhir.cr.hapi.config.r4.CqlOperationConfig;
import org.opencds.cqf.fhir.cr.hapi.config.r4.DataRequirementsOperationConfig;
import org.opencds.cqf.fhir.cr.hapi.config.r4.EvaluateOperationConfig;
import org.opencds.cqf.fhir.utility.client.TerminologyServerClientSettings;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;

/**
 * Clinical Reasoning (cqf-fhir-cr-hapi) operations and CDS Hooks.
 *
 * <p>Only the operation groups a guideline needs are imported (not CrR4Config, which adds Measure/CRMI
 * authoring operations and their settings): PlanDefinition/ActivityDefinition $apply, Library $evaluate,
 * $cql, $data-requirements; and Measure/$evaluate-measure for the indicators (MeasureOperationConfig).
 *
 * <p>CDS Hooks: HAPI's CdsHooksConfig holds the service registry; CR's CrCdsHooksConfig watches PlanDefinitions
 * (resource-change listener) and registers one CDS service per PlanDefinition that has a named-event trigger,
 * id = PlanDefinition id. Cards come from running $apply on it.
 */
@Configuration
@Import({
	RepositoryConfig.class,
	ApplyOperationConfig.class,
	EvaluateOperationConfig.class,
	CqlOperationConfig.class,
	DataRequirementsOperationConfig.class,
	MeasureOperationConfig.class,
	CdsHooksConfig.class,
	CrCdsHooksConfig.class
})
public class ClinicalReasoningConfig {

	/** CQL engine settings. Offline: expand ValueSets in memory from their compose/expansion, never call out. */
	@Bean
	public EvaluationSettings evaluationSettings() {
		EvaluationSettings settings = EvaluationSettings.getDefault();
		// Compiled-library / model / ValueSet caches; clearCqlCachesListener empties the library and ValueSet caches
		// when a Library or ValueSet changes.
		settings.setLibraryCache(new ConcurrentHashMap<>());
		settings.setModelCache(new ConcurrentHashMap<>());
		settings.setValueSetCache(new ConcurrentHashMap<>());
		settings.setTerminologySettings(new TerminologySettings()
				.setValuesetPreExpansionMode(TerminologySettings.VALUESET_PRE_EXPANSION_MODE.USE_IF_PRESENT)
				.setValuesetExpansionMode(TerminologySettings.VALUESET_EXPANSION_MODE.PERFORM_NAIVE_EXPANSION)
				.setValuesetMembershipMode(TerminologySettings.VALUESET_MEMBERSHIP_MODE.USE_EXPANSION)
				.setCodeLookupMode(TerminologySettings.CODE_LOOKUP_MODE.USE_CODESYSTEM_URL));
		settings.setRetrieveSettings(new RetrieveSettings()
				.setSearchParameterMode(RetrieveSettings.SEARCH_FILTER_MODE.USE_SEARCH_PARAMETERS)
				.setTerminologyParameterMode(RetrieveSettings.TERMINOLOGY_FILTER_MODE.USE_INLINE_CODES)
				.setProfileMode(RetrieveSettings.PROFILE_MODE.OFF));
		return settings;
	}

	/** Required by CR's config; only used for remote terminology servers, which this server never contacts. */
	@Bean
	public TerminologyServerClientSettings terminologyServerClientSettings() {
		return TerminologyServerClientSettings.getDefault();
	}

	/**
	 * Drops all compiled CQL when any Library is created/updated/deleted, and all cached ValueSet expansions when any
	 * ValueSet is. Not CR's ElmCacheResourceChangeListener: it evicts the key (Library.name, Library.version), but
	 * CR caches a library reached through an unversioned canonical (PlanDefinition.library = ".../Library/X") under
	 * (X, no version), so a changed Library kept its old logic in $apply until restart. Recompiling is cheap here.
	 */
	@Bean
	public IResourceChangeListener clearCqlCachesListener(
			IResourceChangeListenerRegistry registry, PartitionSettings partitionSettings, EvaluationSettings settings) {
		Map<String, Map<?, ?>> caches = Map.of("Library", settings.getLibraryCache(), "ValueSet", settings.getValueSetCache());
		IResourceChangeListener listener = new IResourceChangeListener() {
			@Override
			public void handleInit(Collection<IIdType> ids) {
				caches.values().forEach(Map::clear);
			}

			@Override
			public void handleChange(IResourceChangeEvent event) {
				Stream.of(event.getCreatedResourceIds(), event.getUpdatedResourceIds(), event.getDeletedResourceIds())
						.filter(Objects::nonNull)
						.flatMap(List::stream)
						.map(IIdType::getResourceType)
						.distinct()
						.map(caches::get)
						.filter(Objects::nonNull)
						.forEach(Map::clear);
			}
		};
		for (String type : caches.keySet()) {
			registry.registerResourceResourceChangeListener(
					type,
					RequestPartitionId.defaultPartition(partitionSettings),
					SearchParameterMap.newSynchronous(),
					listener,
					1000);
		}
		return listener;
	}

	/** Makes writes trigger an immediate refresh of the listeners above (and of CDS service registration). */
	@Bean
	public ResourceChangeListenerRegistryInterceptor resourceChangeListenerRegistryInterceptor() {
		return new ResourceChangeListenerRegistryInterceptor();
	}

	/** Runs the listeners above right after a write instead of on HAPI's 10-second schedule. */
	@Bean
	public ImmediateRefreshInterceptor immediateRefreshInterceptor(
			IResourceChangeListenerCacheRefresher refresher, RestfulServer restfulServer) {
		var interceptor = new ImmediateRefreshInterceptor(refresher);
		restfulServer.registerInterceptor(interceptor);
		return interceptor;
	}

	/** CDS services are registered dynamically (from PlanDefinitions), none from Spring beans. */
	@Bean
	public CdsHooksContextBooter cdsHooksContextBooter() {
		return new CdsHooksContextBooter();
	}

	/** Prefetched resources are not access-checked: this is a local, single-user development server. */
	@Bean
	public ICdsHooksDaoAuthorizationSvc cdsHooksDaoAuthorizationSvc() {
		return resource -> {};
	}

	/**
	 * CDS Hooks at /cds-services: cards from the evaluation core or the $apply path (CdsEvaluator, CdsCards, setting
	 * guideline.cds.evaluator), the cards sent and the feedback received kept in this server's database
	 * (CdsFeedbackStore; its card table is created here, at start-up, on the JPA storage's DataSource). A servlet
	 * Filter registered for /cds-services/* runs before it, so it can refuse a call before any evaluation.
	 */
	@Bean
	public ServletRegistrationBean<CdsHooksServlet> cdsHooksServlet(
			ICdsServiceRegistry registry,
			@Qualifier(CdsHooksConfig.CDS_HOOKS_OBJECT_MAPPER_FACTORY) ObjectMapper mapper,
			IRepositoryFactory repositories,
			CrSettings crSettings,
			DaoRegistry daos,
			MatchUrlService matchUrls,
			KnowledgeCache knowledge,
			FhirContext fhirContext,
			EvaluationSettings settings,
			DataSource dataSource,
			GuidelineProperties props) {
		GuidelineProperties.Cds cds = props.cds();
		// the package's override-reason CodeSystem, read like the other knowledge: cached until knowledge changes
		OverrideReasons reasons = new OverrideReasons(
				url -> (CodeSystem) knowledge.resource("CodeSystem?url=" + url, () -> storedCodeSystem(daos, url)));
		var evaluator = new CdsEvaluator(repositories, crSettings, daos, matchUrls, knowledge, fhirContext, mapper,
				cds.pathwayPlanDefinition(), settings.getCqlOptions().getCqlCompilerOptions());
		var servlet = new CdsHooksServlet(
				registry,
				mapper,
				Duration.ofSeconds(cds.fhirServerTimeoutSeconds()),
				cds.prefetchIncludeMedication(),
				cds.pathwayServiceId(),
				evaluator,
				new CdsCards(fhirContext, mapper, cds.siteBaseUrl(), reasons),
				new CdsFeedback(new CdsFeedbackStore(daos, dataSource), reasons),
				new InformationalCards(cds.informationalCards(), evaluator::plan),
				cds.evaluator());
		var reg = new ServletRegistrationBean<>(servlet, "/cds-services", "/cds-services/*");
		reg.setName("cds-hooks");
		return reg;
	}

	/** The stored CodeSystem with canonical {@code url} (the first, if several versions are stored), or null. */
	private static CodeSystem storedCodeSystem(DaoRegistry daos, String url) {
		List<IBaseResource> found = daos.getResourceDao(CodeSystem.class)
				.search(SearchParameterMap.newSynchronous(CodeSystem.SP_URL, new UriParam(url)), new SystemRequestDetails())
				.getAllResources();
		return found.isEmpty() ? null : (CodeSystem) found.get(0);
	}

	@Bean
	public ServletRegistrationBean<PackageInstallServlet> packageInstallServlet(
			ca.uhn.fhir.jpa.packages.IPackageInstallerSvc installer) {
		var reg = new ServletRegistrationBean<>(new PackageInstallServlet(installer), "/packages");
		reg.setName("package-install");
		return reg;
	}
}
