package org.example.gl.server;

import ca.uhn.fhir.jpa.cache.IResourceChangeListenerCacheRefresher;
import ca.uhn.fhir.jpa.cache.IResourceChangeListenerRegistry;
import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import javax.sql.DataSource;
import org.hl7.fhir.r4.model.Library;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.hl7.fhir.r4.model.ValueSet;
import org.opencds.cqf.fhir.cql.EvaluationSettings;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.web.filter.OncePerRequestFilter;

/**
 * Cross-node freshness of the knowledge caches. Clinical reasoning caches compiled CQL and ValueSet expansions in the
 * JVM, the CDS services parsed knowledge resources ({@link KnowledgeCache}); {@link ImmediateRefreshInterceptor} empties them after a write, but only on the node that took the write, and
 * HAPI's own resource-change polling reaches other nodes only every 10 s. With several nodes on one database, node B
 * would keep evaluating the old CQL after a republish through node A.
 *
 * <p>So every evaluation request ($apply, $evaluate, ... under /fhir, and everything under /cds-services) first reads
 * a fingerprint of the knowledge in the database: count, sum of versions and newest update time of the Library,
 * ValueSet, PlanDefinition, ActivityDefinition and CodeSystem (the cards' override reasons) rows (one indexed aggregate query, well under a millisecond on a knowledge-sized
 * database). HAPI gives every create/update/delete a new version and expunge removes rows, so any committed knowledge
 * write changes it. When it changed, the caches are emptied and HAPI's resource-change listeners are run (which also
 * (re)registers CDS services for changed PlanDefinitions) before the request goes on. The bound is therefore zero:
 * the first evaluation that starts after the write committed, on any node, uses the new logic.
 *
 * <p>Evaluations hold a read lock, the emptying takes the write lock: an evaluation that read the old Library before
 * the write committed and puts its compiled copy into the cache afterwards finishes before the cache is emptied, so
 * it cannot leave stale logic behind. The write lock is awaited at most 10 s (a nested call to this server from
 * within an evaluation could otherwise wait on itself); after that the caches are emptied anyway.
 */
public class KnowledgeFreshnessFilter extends OncePerRequestFilter {
	private static final Logger ourLog = LoggerFactory.getLogger(KnowledgeFreshnessFilter.class);
	private static final String FINGERPRINT_SQL = "SELECT COUNT(*), COALESCE(SUM(RES_VER), 0), MAX(RES_UPDATED) "
			+ "FROM HFJ_RESOURCE WHERE RES_TYPE IN ('Library', 'ValueSet', 'PlanDefinition', 'ActivityDefinition', 'CodeSystem')";

	private final DataSource dataSource;
	private final EvaluationSettings settings;
	private final IResourceChangeListenerRegistry registry;
	private final IResourceChangeListenerCacheRefresher refresher;
	private final KnowledgeCache knowledge;
	private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
	private volatile String seen;

	/**
	 * The filter over {@code dataSource}'s knowledge rows, emptying CR's caches ({@code settings}) and {@code
	 * knowledge}, and running HAPI's listeners ({@code registry}, {@code refresher}: pass lazy proxies, they are
	 * created after the servlet filters) when the fingerprint changes. Registered by {@link FilterConfig}.
	 */
	public KnowledgeFreshnessFilter(
			DataSource dataSource,
			EvaluationSettings settings,
			IResourceChangeListenerRegistry registry,
			IResourceChangeListenerCacheRefresher refresher,
			KnowledgeCache knowledge) {
		this.dataSource = dataSource;
		this.knowledge = knowledge;
		this.settings = settings;
		this.registry = registry;
		this.refresher = refresher;
	}

	@Override
	protected boolean shouldNotFilter(HttpServletRequest request) {
		String path = request.getRequestURI().substring(request.getContextPath().length());
		if (path.equals("/cds-services") || path.startsWith("/cds-services/")) {
			return "OPTIONS".equals(request.getMethod());
		}
		return !(path.startsWith("/fhir/") && path.substring(path.lastIndexOf('/') + 1).startsWith("$"));
	}

	@Override
	protected void doFilterInternal(HttpServletRequest req, HttpServletResponse resp, FilterChain chain)
			throws ServletException, IOException {
		String now;
		try {
			now = fingerprint();
		} catch (SQLException e) {
			// the database is unreachable: say so (never evaluate against caches we cannot check)
			ourLog.warn("knowledge fingerprint query failed: {}", e.getMessage());
			resp.setHeader("Retry-After", "5");
			resp.sendError(HttpServletResponse.SC_SERVICE_UNAVAILABLE, "database unavailable; retry later");
			return;
		}
		if (!now.equals(seen)) {
			refresh(now);
		}
		lock.readLock().lock();
		try {
			chain.doFilter(req, resp);
		} finally {
			lock.readLock().unlock();
		}
	}

	private void refresh(String now) {
		boolean locked = false;
		try {
			locked = lock.writeLock().tryLock(10, TimeUnit.SECONDS);
		} catch (InterruptedException e) {
			Thread.currentThread().interrupt();
		}
		try {
			synchronized (this) {
				if (now.equals(seen)) {
					return;
				}
				settings.getLibraryCache().clear();
				settings.getValueSetCache().clear();
				knowledge.clear();
				// mark HAPI's listener caches for these types dirty, then run them: CDS services follow PlanDefinitions
				registry.requestRefreshIfWatching(new Library());
				registry.requestRefreshIfWatching(new ValueSet());
				registry.requestRefreshIfWatching(new PlanDefinition());
				refresher.refreshExpiredCachesAndNotifyListeners();
				if (seen != null) {
					ourLog.info("knowledge changed in the database ({} -> {}): caches emptied", seen, now);
				}
				seen = now;
			}
		} finally {
			if (locked) {
				lock.writeLock().unlock();
			}
		}
	}

	private String fingerprint() throws SQLException {
		try (Connection c = dataSource.getConnection();
				Statement s = c.createStatement();
				ResultSet rs = s.executeQuery(FINGERPRINT_SQL)) {
			rs.next();
			return rs.getLong(1) + "/" + rs.getLong(2) + "/" + rs.getTimestamp(3);
		}
	}
}
