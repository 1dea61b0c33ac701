package org.example.gl.server;

import ca.uhn.fhir.interceptor.model.RequestPartitionId;
import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.cache.IResourceChangeListenerRegistry;
import ca.uhn.fhir.jpa.cache.ResourceChangeListenerRegistryInterceptor;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.searchparam.SearchParameterMap;
import ca.uhn.hapi.fhir.cdshooks.api.ICdsHooksDaoAuthorizationSvc;
import ca.uhn.hapi.fhir.cdshooks.api.ICdsServiceRegistry;
import ca.uhn.hapi.fhir.cdshooks.config.CdsHooksConfig;
import ca.uhn.hapi.fhir.cdshooks.svc.CdsHooksContextBooter;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.concurrent.ConcurrentHashMap;
import org.opencds.cqf.fhir.cql.EvaluationSettings;
import org.opencds.cqf.fhir.cql.engine.retrieve.RetrieveSettings;
import org.opencds.cqf.fhir.cql.engine.terminology.TerminologySettings;
import org.opencds.cqf.fhir.cr.hapi.common.CodeCacheResourceChangeListener;
import org.opencds.cqf.fhir.cr.hapi.common.ElmCacheResourceChangeListener;
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
 * $cql, $data-requirements.
 *
 * <p>CDS Hooks: HAPI's CdsHooksConfig holds the service registry; CR's CrCdsHooksConfig watches PlanDefinitions
 * (polled every second) and registers one CDS service per PlanDefinition that has a named-event trigger,
 * id = PlanDefinition id. Cards come from running $apply on it.
 */
@Configuration
@Import({
	RepositoryConfig.class,
	ApplyOperationConfig.class,
	EvaluateOperationConfig.class,
	CqlOperationConfig.class,
	DataRequirementsOperationConfig.class,
	CdsHooksConfig.class,
	CrCdsHooksConfig.class
})
public class ClinicalReasoningConfig {

	/** CQL engine settings. Offline: expand ValueSets in memory from their compose/expansion, never call out. */
	@Bean
	public EvaluationSettings evaluationSettings() {
		EvaluationSettings settings = EvaluationSettings.getDefault();
		// Compiled-library / model / ValueSet caches; the listeners below evict entries when resources change.
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
				.setTerminologyParameterMode(RetrieveSettings.TERMINOLOGY_FILTER_MODE.FILTER_IN_MEMORY)
				.setProfileMode(RetrieveSettings.PROFILE_MODE.OFF));
		return settings;
	}

	/** Required by CR's config; only used for remote terminology servers, which this server never contacts. */
	@Bean
	public TerminologyServerClientSettings terminologyServerClientSettings() {
		return TerminologyServerClientSettings.getDefault();
	}

	/** Evicts compiled CQL when a Library is created/updated/deleted (else a PUT Library keeps old logic). */
	@Bean
	public ElmCacheResourceChangeListener elmCacheListener(
			IResourceChangeListenerRegistry registry,
			PartitionSettings partitionSettings,
			DaoRegistry daoRegistry,
			EvaluationSettings settings) {
		var listener = new ElmCacheResourceChangeListener(daoRegistry, settings.getLibraryCache());
		registry.registerResourceResourceChangeListener(
				"Library",
				RequestPartitionId.defaultPartition(partitionSettings),
				SearchParameterMap.newSynchronous(),
				listener,
				1000);
		return listener;
	}

	/** Evicts cached ValueSet expansions when a ValueSet changes. */
	@Bean
	public CodeCacheResourceChangeListener codeCacheListener(
			IResourceChangeListenerRegistry registry,
			PartitionSettings partitionSettings,
			DaoRegistry daoRegistry,
			EvaluationSettings settings) {
		var listener = new CodeCacheResourceChangeListener(daoRegistry, settings.getValueSetCache());
		registry.registerResourceResourceChangeListener(
				"ValueSet",
				RequestPartitionId.defaultPartition(partitionSettings),
				SearchParameterMap.newSynchronous(),
				listener,
				1000);
		return listener;
	}

	/** Makes writes trigger an immediate refresh of the listeners above (and of CDS service registration). */
	@Bean
	public ResourceChangeListenerRegistryInterceptor resourceChangeListenerRegistryInterceptor() {
		return new ResourceChangeListenerRegistryInterceptor();
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

	@Bean
	public ServletRegistrationBean<CdsHooksServlet> cdsHooksServlet(
			ICdsServiceRegistry registry, @Qualifier(CdsHooksConfig.CDS_HOOKS_OBJECT_MAPPER_FACTORY) ObjectMapper mapper) {
		var reg = new ServletRegistrationBean<>(new CdsHooksServlet(registry, mapper), "/cds-services", "/cds-services/*");
		reg.setName("cds-hooks");
		return reg;
	}
}
