package org.example.gl.server;

import org.springframework.boot.context.properties.ConfigurationProperties;

/**
 * Every {@code guideline.*} setting of the server, bound once from application.yaml, {@code -D} options and the
 * environment. The defaults are written in application.yaml and nowhere else; the environment variables the README
 * documents ({@code GUIDELINE_DB_URL}, ...) are mapped there too, so no class reads the environment itself. The
 * records only turn an absent text (bound as null) into "", so callers test {@code isBlank()} and never null.
 *
 * @param dataDir H2 file database folder ({@code scripts/server --data}); "" = in-memory
 * @param requireTokenFile test-EHR mode: every request needs the bearer token on this file's first line
 * @param writeTokenFile writes need the bearer token on this file's first line; "" = writes open (loopback only)
 * @param db an existing PostgreSQL database instead of H2
 * @param cds the CDS Hooks services
 * @param bulkExport FHIR Bulk Data $export
 */
@ConfigurationProperties(prefix = "guideline")
public record GuidelineProperties(
		String dataDir, String requireTokenFile, String writeTokenFile, Db db, Cds cds, BulkExport bulkExport) {
	/** Absent texts become "", absent groups their all-"" form. */
	public GuidelineProperties {
		dataDir = text(dataDir);
		requireTokenFile = text(requireTokenFile);
		writeTokenFile = text(writeTokenFile);
		db = db == null ? new Db(null, null, null, null) : db;
		if (cds == null) {
			throw new IllegalStateException("guideline.cds is missing: application.yaml holds its defaults");
		}
		if (bulkExport == null) {
			throw new IllegalStateException("guideline.bulk-export is missing: application.yaml holds its defaults");
		}
	}

	/**
	 * FHIR Bulk Data export.
	 *
	 * @param enabled whether /fhir offers $export (system, Group/[id], Patient) and $export-poll-status
	 * @param jobStepSeconds how often HAPI's batch jobs (an export's steps) advance: its maintenance pass interval
	 */
	public record BulkExport(boolean enabled, long jobStepSeconds) {
		/** The interval must be positive (HAPI schedules the pass with it). */
		public BulkExport {
			if (jobStepSeconds < 1) {
				throw new IllegalStateException("guideline.bulk-export.job-step-seconds must be at least 1, got " + jobStepSeconds);
			}
		}
	}

	/**
	 * PostgreSQL connection ({@code GUIDELINE_DB_*} in application.yaml): read from the environment, never from
	 * {@code -D} options, so a password never appears on a command line.
	 *
	 * @param url {@code jdbc:postgresql://HOST:PORT/DB}; "" = H2
	 * @param user the database user ("" = postgres)
	 * @param passwordFile file whose first line is the password (preferred over {@code password})
	 * @param password the password itself, when there is no file
	 */
	public record Db(String url, String user, String passwordFile, String password) {
		/** Absent texts become "", surrounding whitespace is dropped (as the environment may carry it). */
		public Db {
			url = text(url).strip();
			user = text(user).strip();
			passwordFile = text(passwordFile).strip();
			password = text(password).strip();
		}

		/** True when the server runs on PostgreSQL rather than H2. */
		public boolean postgres() {
			return !url.isBlank();
		}
	}

	/**
	 * The CDS Hooks services.
	 *
	 * @param fhirServerTimeoutSeconds budget for reading missing prefetch from a request's fhirServer
	 * @param pathwayServiceId the service running every per-recommendation patient-view service
	 * @param pathwayPlanDefinition the PlanDefinition whose actions order the pathway service's cards
	 * @param siteBaseUrl card source.url base; "" = the package canonical
	 * @param issuersFile trusted CDS clients (JWT issuers); "" = calls not authenticated (127.0.0.1 only)
	 * @param publicBaseUrl the base URL EHRs call (behind a proxy); "" = each request's own URL
	 * @param informationalCards offer informational recommendations (R6, proposing nothing) as CDS cards; default
	 *     false (project safety rule 17: a card at every chart opening that proposes nothing is alert fatigue)
	 * @param prefetchIncludeMedication publish the medication prefetch templates with {@code _include} of the
	 *     Medication they reference, for EHRs known to support it; default false (CDS Hooks 2.0's recommended
	 *     prefetch subset has no {@code _include}; referenced Medications are then read from fhirServer)
	 * @param jwt the JWT time checks
	 * @param evaluator how the services evaluate: {@code core} (default: the evaluation core shared with the batch
	 *     evaluator) or {@code apply} (clinical reasoning's PlanDefinition {@code $apply}, the old path, kept for
	 *     the side-by-side benchmark and the equality test)
	 */
	public record Cds(
			long fhirServerTimeoutSeconds,
			String pathwayServiceId,
			String pathwayPlanDefinition,
			String siteBaseUrl,
			String issuersFile,
			String publicBaseUrl,
			boolean informationalCards,
			boolean prefetchIncludeMedication,
			Jwt jwt,
			Evaluation evaluator) {
		/** Absent texts become ""; the JWT checks must be configured (application.yaml holds their defaults). */
		public Cds {
			pathwayServiceId = text(pathwayServiceId);
			pathwayPlanDefinition = text(pathwayPlanDefinition);
			siteBaseUrl = text(siteBaseUrl);
			issuersFile = text(issuersFile);
			publicBaseUrl = text(publicBaseUrl);
			if (jwt == null) {
				throw new IllegalStateException("guideline.cds.jwt is missing: application.yaml holds its defaults");
			}
			if (evaluator == null) {
				throw new IllegalStateException("guideline.cds.evaluator is missing: application.yaml holds its default");
			}
		}
	}

	/** How the CDS services evaluate (guideline.cds.evaluator). */
	public enum Evaluation {
		/** the evaluation core (engine/), shared with the batch evaluator */
		CORE,
		/** clinical reasoning's PlanDefinition $apply, one call per recommendation (the old path) */
		APPLY
	}

	/**
	 * The JWT time checks (CDS Hooks 2.0 "Trusting CDS Clients").
	 *
	 * @param skewSeconds clock skew allowed on exp and iat
	 * @param maxLifetimeSeconds how far ahead exp may be
	 */
	public record Jwt(long skewSeconds, long maxLifetimeSeconds) {}

	private static String text(String value) {
		return value == null ? "" : value;
	}
}
