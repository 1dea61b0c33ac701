package org.example.gl.server;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.jpa.cache.IResourceChangeListenerCacheRefresher;
import ca.uhn.fhir.rest.api.RequestTypeEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import java.util.Set;

/**
 * After a write to Library, ValueSet or PlanDefinition (or a transaction/batch, which may contain them), runs
 * HAPI's resource-change listeners before the response is sent. They evict CR's compiled-CQL and ValueSet caches
 * and (un)register CDS services. HAPI itself only runs them from a job every 10 s, so without this a client that
 * PUTs a changed Library and calls $apply right away can get the old logic, and a new PlanDefinition appears in
 * /cds-services up to 10 s late.
 */
@Interceptor
public class ImmediateRefreshInterceptor {
	private static final Set<String> WATCHED = Set.of("Library", "ValueSet", "PlanDefinition");

	private final IResourceChangeListenerCacheRefresher refresher;

	public ImmediateRefreshInterceptor(IResourceChangeListenerCacheRefresher refresher) {
		this.refresher = refresher;
	}

	@Hook(Pointcut.SERVER_OUTGOING_RESPONSE)
	public boolean afterWrite(RequestDetails request) {
		RequestTypeEnum method = request.getRequestType();
		boolean write = method == RequestTypeEnum.POST
				|| method == RequestTypeEnum.PUT
				|| method == RequestTypeEnum.DELETE
				|| method == RequestTypeEnum.PATCH;
		String type = request.getResourceName(); // null for transaction/batch at the base URL
		// operations ($apply, $evaluate) are POSTs too but write nothing
		boolean operation = request.getOperation() != null;
		if (write && !operation && (type == null || WATCHED.contains(type))) {
			// the DAO transaction has committed by now; this refreshes only caches marked dirty or due
			refresher.refreshExpiredCachesAndNotifyListeners();
		}
		return true;
	}
}
