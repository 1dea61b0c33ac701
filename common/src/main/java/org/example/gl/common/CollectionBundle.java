package org.example.gl.common;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.List;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.Resource;

/**
 * A FHIR {@code collection} Bundle of one patient's resources, the shape both CQL engines are handed their data in
 * (clinical reasoning's {@code data} parameter, the batch evaluator's per-patient Bundle). One builder for each form
 * the callers hold the resources in: JSON texts (the batch reads NDJSON lines and never builds a tree), Jackson
 * trees (CDS prefetch) and HAPI model objects (the server's own searches). Entries keep the given order; nothing is
 * deduplicated or checked here, that is the caller's rule.
 */
public final class CollectionBundle {
	private static final String HEAD = "{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[";

	private CollectionBundle() {}

	/**
	 * The Bundle as JSON text around resources that already are JSON texts, without parsing them: joining is far
	 * cheaper than building a tree the engine's parser would only walk again.
	 */
	public static String ofJsonTexts(List<String> resources) {
		int size = HEAD.length() + 2;
		for (String r : resources) {
			size += r.length() + 14;
		}
		StringBuilder b = new StringBuilder(size).append(HEAD);
		for (int i = 0; i < resources.size(); i++) {
			b.append(i == 0 ? "" : ",").append("{\"resource\":").append(resources.get(i)).append('}');
		}
		return b.append("]}").toString();
	}

	/** The Bundle as a Jackson tree holding {@code resources} (the nodes themselves, not copies). */
	public static ObjectNode ofJson(ObjectMapper mapper, Iterable<? extends JsonNode> resources) {
		ObjectNode bundle = mapper.createObjectNode();
		bundle.put("resourceType", "Bundle").put("type", "collection");
		ArrayNode entry = bundle.putArray("entry");
		resources.forEach(r -> entry.addObject().set("resource", r));
		return bundle;
	}

	/** The Bundle as an R4 model object holding {@code resources} (R4 resources; anything else is a caller error). */
	public static Bundle of(Iterable<? extends IBaseResource> resources) {
		Bundle bundle = new Bundle().setType(Bundle.BundleType.COLLECTION);
		resources.forEach(r -> bundle.addEntry().setResource((Resource) r));
		return bundle;
	}
}
