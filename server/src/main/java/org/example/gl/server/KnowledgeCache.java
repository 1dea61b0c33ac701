package org.example.gl.server;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;
import java.util.function.Supplier;
import org.example.gl.engine.Knowledge;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.hl7.fhir.r4.model.Resource;
import org.springframework.stereotype.Component;

/**
 * Knowledge the CDS services read on every call, kept parsed in memory instead of read from the database and parsed
 * from JSON each time: the PlanDefinitions they evaluate (a pathway call read and parsed 13 of them: 15 % of its
 * time) and clinical reasoning's reads and searches of knowledge resources through {@link KnowledgeCachingRepository}
 * (the ActivityDefinition of every action that fires, looked up by canonical: 10 %), and the evaluation core's
 * {@link Knowledge} (compiled CQL, value-set expansions, PlanDefinitions, ActivityDefinitions).
 *
 * <p>Emptied by {@link KnowledgeFreshnessFilter} whenever the knowledge fingerprint in the database changes (every
 * type cached here is in it), inside its write lock, exactly like clinical reasoning's own library and ValueSet
 * caches: a CDS call that starts after a knowledge write committed, on any node, reads the new resource. Callers get
 * copies, so nothing an evaluation does to a resource can reach the cached one or another thread's.
 */
@Component
public class KnowledgeCache {
	/** Above this many entries the cache starts over: knowledge is small, so this only bounds a pathological caller. */
	private static final int MAX_ENTRIES = 10_000;

	private final Map<String, PlanDefinition> plans = new ConcurrentHashMap<>();
	private final Map<String, Resource> reads = new ConcurrentHashMap<>();
	/** The evaluation core's knowledge (compiled CQL, expansions, plans), built on first use after each change. */
	private Knowledge core;

	/** A copy of the cached PlanDefinition {@code id}, read with {@code reader} (null: not stored) when missing. */
	public PlanDefinition plan(String id, Function<String, PlanDefinition> reader) {
		bound(plans);
		PlanDefinition cached = plans.computeIfAbsent(id, reader); // null is not cached: a missing plan is re-read
		return cached == null ? null : cached.copy();
	}

	/**
	 * A copy of what {@code load} returned for {@code key} (a read or a search Bundle of a knowledge type). A load
	 * that throws caches nothing and throws again next time.
	 */
	public Resource resource(String key, Supplier<Resource> load) {
		bound(reads);
		Resource cached = reads.computeIfAbsent(key, k -> load.get());
		return cached == null ? null : cached.copy();
	}

	/**
	 * The evaluation core's knowledge, built with {@code load} on the first call after a change (compiling the CQL
	 * takes seconds: concurrent first calls wait for one build rather than each compiling it). A load that throws
	 * caches nothing.
	 */
	public synchronized Knowledge core(Supplier<Knowledge> load) {
		if (core == null) {
			core = load.get();
		}
		return core;
	}

	/** Forgets everything (the knowledge in the database changed). */
	public void clear() {
		plans.clear();
		reads.clear();
		synchronized (this) {
			core = null;
		}
	}

	private static void bound(Map<String, ?> map) {
		if (map.size() > MAX_ENTRIES) {
			map.clear();
		}
	}
}
