package org.example.gl.server;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.ValueSetOperationProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.match.deliver.email.IEmailSender;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import com.zaxxer.hikari.HikariDataSource;
import jakarta.persistence.EntityManagerFactory;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.SmartInitializingSingleton;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.autoconfigure.orm.jpa.JpaProperties;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;
import org.springframework.transaction.annotation.EnableTransactionManagement;

/** HAPI JPA storage (H2 by default, or PostgreSQL) and the FHIR REST endpoint. */
@Configuration
@EnableTransactionManagement
// JpaR4Config: R4 DAOs/providers (+ JpaConfig); HapiJpaConfig: paging, fulltext (disabled), stale-search cleanup
@Import({JpaR4Config.class, HapiJpaConfig.class, ThreadPoolFactoryConfig.class})
public class JpaServerConfig {
	private static final Logger ourLog = LoggerFactory.getLogger(JpaServerConfig.class);

	/**
	 * In-memory H2 by default (fresh, empty server each start). With {@code guideline.data-dir} set, an H2 file
	 * database in that directory, so loaded content survives a restart. DB_CLOSE_ON_EXIT=FALSE lets Spring close the
	 * pool (and thus the database) on shutdown instead of racing H2's own shutdown hook; TRACE_LEVEL_FILE=0:
	 * no .trace.db file (Hibernate probes H2 with harmless failing DDL for its temporary tables).
	 *
	 * <p>With the environment variable GUIDELINE_DB_URL = jdbc:postgresql://HOST:PORT/DB (scripts/server start
	 * --db postgres sets it for its private cluster), PostgreSQL instead; user from GUIDELINE_DB_USER, password from
	 * the file named by GUIDELINE_DB_PASSWORD_FILE (first line) or GUIDELINE_DB_PASSWORD (mapped to
	 * {@code guideline.db.*} in application.yaml: from the environment, so a password never appears on a command
	 * line); only the URL is logged.
	 */
	@Bean
	public DataSource dataSource(GuidelineProperties props) {
		HikariDataSource ds = new HikariDataSource();
		GuidelineProperties.Db db = props.db();
		if (db.postgres()) {
			if (!db.url().startsWith("jdbc:postgresql:")) {
				throw new IllegalStateException(
						"GUIDELINE_DB_URL must be a jdbc:postgresql://HOST:PORT/DATABASE URL (only PostgreSQL is supported)");
			}
			ourLog.info("Database: PostgreSQL {}", db.url().replaceAll("\\?.*", ""));
			ds.setDriverClassName("org.postgresql.Driver");
			ds.setJdbcUrl(db.url());
			ds.setUsername(db.user().isBlank() ? "postgres" : db.user());
			ds.setPassword(dbPassword(db));
			// fail a request quickly (a 5xx) while the database is unreachable instead of queueing for 30 s
			ds.setConnectionTimeout(5000);
			ds.setMaximumPoolSize(10);
			return ds;
		}
		String dataDir = props.dataDir();
		String url = dataDir.isBlank()
				? "jdbc:h2:mem:guideline;DB_CLOSE_DELAY=-1"
				: "jdbc:h2:file:" + Path.of(dataDir).toAbsolutePath().resolve("guideline") + ";DB_CLOSE_ON_EXIT=FALSE;TRACE_LEVEL_FILE=0";
		ourLog.info("Database: {}", url);
		ds.setDriverClassName("org.h2.Driver");
		ds.setJdbcUrl(url);
		ds.setUsername("sa");
		ds.setPassword("");
		ds.setMaximumPoolSize(10);
		return ds;
	}

	private static String dbPassword(GuidelineProperties.Db db) {
		if (db.passwordFile().isBlank()) {
			return db.password();
		}
		try {
			return Files.readString(Path.of(db.passwordFile()), StandardCharsets.UTF_8).lines().findFirst().orElse("").strip();
		} catch (IOException e) {
			throw new UncheckedIOException("cannot read GUIDELINE_DB_PASSWORD_FILE " + db.passwordFile(), e);
		}
	}

	/** HAPI's own Hibernate dialect for the database in use (its schema and SQL differ per database). */
	static String dialect(GuidelineProperties.Db db) {
		return db.postgres()
				? "ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect"
				: "ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect";
	}

	@Bean
	public JpaStorageSettings jpaStorageSettings() {
		JpaStorageSettings s = new JpaStorageSettings();
		// Content uses its own ids ("GLCommon", "123"): accept any client-assigned id on PUT;
		// server-assigned ids then have to be UUIDs so they never collide with client ids.
		s.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ANY);
		s.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.UUID);
		// Referential integrity stays on (HAPI default): a dangling reference in content is an error worth seeing.
		// $expunge and conditional multi-delete help tests reset the database between runs.
		s.setExpungeEnabled(true);
		// HAPI's package installer (POST /packages, PackageInstallServlet) by default installs only resources whose
		// status is active and logs "Resource status not accepted value" for the rest; a package under development
		// is draft (guideline.toml), and the installer must take it as `guideline publish` does.
		s.setValidateResourceStatusForPackageUpload(false);
		// HAPI reuses an identical search's results for 60 s by default. A publisher looks a
		// resource up by url|version, writes it, and looks again: a cached "not found" would make
		// it write again. Knowledge servers are small; always search fresh.
		s.setReuseCachedSearchResultsForMillis(null);
		// A search loads its matches in passes (HAPI default: 13, 503, 2003, then all). A reader that wants more
		// than the first pass, as every CQL retrieve of the engine does when it follows the next links, makes the
		// coordinator start the next pass and poll for it every 500 ms: 1.1 s of sleeping per CDS call for a
		// patient with a few dozen records (scripts/bench, section 3). Up to 5,000 matches now load in the first
		// pass, so the engine's retrieves never wait; larger result sets still load in a second pass.
		s.setSearchPreFetchThresholds(List.of(5000, -1));
		s.setAllowMultipleDelete(true);
		bulkExport(s);
		return s;
	}

	/**
	 * FHIR Bulk Data $export as `guideline export` uses it. A repeated identical export starts a new job instead of
	 * answering with an earlier job's files (HAPI's default): like the search cache above, an export must see what was
	 * loaded since. Fast tracking runs the next step of a small job at once instead of at the next batch maintenance
	 * pass (one a minute), so an export of a few hundred patients completes in seconds rather than minutes.
	 */
	static void bulkExport(JpaStorageSettings s) {
		s.setEnableBulkExportJobReuse(false);
		s.setJobFastTrackingEnabled(true);
	}

	/**
	 * How often HAPI's batch jobs advance: a Bulk export moves from one step to the next only at a maintenance pass,
	 * by default once a minute, so even a tiny export took three minutes. Set before the scheduler starts (it
	 * schedules the pass once, when the context is refreshed; singletons are all created before that).
	 */
	@Bean
	public SmartInitializingSingleton batchMaintenanceInterval(IJobMaintenanceService maintenance, GuidelineProperties props) {
		return () -> {
			if (maintenance instanceof JobMaintenanceServiceImpl impl) {
				impl.setScheduledJobFrequencyMillis(props.bulkExport().jobStepSeconds() * 1000L);
			}
		};
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings(); // partitioning off
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings(); // no subscription channel types enabled
	}

	/** Required by the subscription delivery beans; email subscriptions are not supported here. */
	@Bean
	public IEmailSender emailSender() {
		return details -> {};
	}

	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			JpaProperties jpaProperties,
			DataSource dataSource,
			ca.uhn.fhir.context.FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			GuidelineProperties guideline) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		Map<String, Object> props = new HashMap<>(jpaProperties.getProperties()); // spring.jpa.properties.*
		props.put("hibernate.dialect", dialect(guideline.db()));
		emf.setJpaPropertyMap(props);
		emf.setDataSource(dataSource);
		return emf;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory emf) {
		return new JpaTransactionManager(emf);
	}

	/**
	 * The FHIR endpoint. It has to be a Spring bean: CR's ProviderLoaders register $apply, $evaluate, ... into it
	 * on ContextRefreshedEvent, and CDS Hooks looks it up too.
	 */
	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> systemDao,
			ResourceProviderFactory resourceProviders,
			IJpaSystemProvider systemProvider,
			ValueSetOperationProvider valueSetOperations,
			DatabaseBackedPagingProvider pagingProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			BulkDataExportProvider bulkExport,
			GuidelineProperties props) {
		RestfulServer server = new RestfulServer(systemDao.getContext());
		server.registerProviders(resourceProviders.createProviders());
		server.registerProvider(systemProvider); // transaction/batch, $meta, ...
		server.registerProvider(valueSetOperations); // $expand, $validate-code
		if (props.bulkExport().enabled()) {
			// $export (system, Group/[id], Patient) and $export-poll-status; the batch2 job that runs them is
			// registered by Batch2JobsConfig (GuidelineServer), the provider bean comes from JpaConfig.
			server.registerProvider(bulkExport);
		}
		server.setPagingProvider(pagingProvider);
		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		capabilities.setImplementationDescription("Guideline development FHIR server (HAPI JPA, " + (props.db().postgres() ? "PostgreSQL" : "H2") + ")");
		server.setServerConformanceProvider(capabilities);
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer server) {
		ServletRegistrationBean<RestfulServer> reg = new ServletRegistrationBean<>(server, "/fhir/*");
		reg.setName("fhir");
		// initialise at startup, so the first request (readiness probe) does not pay for it
		reg.setLoadOnStartup(1);
		return reg;
	}
}
