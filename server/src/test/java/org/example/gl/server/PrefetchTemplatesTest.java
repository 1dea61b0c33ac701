package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The prefetch templates this service publishes (CDS Hooks 2.0's recommended subset unless
 * {@code guideline.cds.prefetch-include-medication} is on) and how {@link PrefetchResolver} completes a request's
 * prefetch with the Medications its medication resources reference.
 */
class PrefetchTemplatesTest {
	private static final ObjectMapper MAPPER = new ObjectMapper();
	private static final String PATIENT = "Patient/{{context.patientId}}";
	private static final String REQUESTS = "MedicationRequest?patient=Patient/{{context.patientId}}&code=http://x|1";

	private HttpServer ehr;
	private final List<String> seen = Collections.synchronizedList(new ArrayList<>());

	@AfterEach
	void stop() {
		if (ehr != null) {
			ehr.stop(0);
		}
	}

	/** A stub EHR FHIR server answering reads of {@code Medication/<id>} for the ids given; 404 otherwise. */
	private String startEhr(List<String> medicationIds) throws IOException {
		ehr = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
		ehr.createContext("/fhir/", exchange -> {
			String path = exchange.getRequestURI().getPath().substring("/fhir/".length());
			seen.add(path + " " + exchange.getRequestHeaders().getFirst("Authorization"));
			String id = path.startsWith("Medication/") ? path.substring("Medication/".length()) : "";
			byte[] body;
			int status;
			if (medicationIds.contains(id)) {
				body = ("{\"resourceType\":\"Medication\",\"id\":\"" + id + "\",\"code\":{\"text\":\"insulin\"}}")
						.getBytes(StandardCharsets.UTF_8);
				status = 200;
			} else {
				body = "{\"resourceType\":\"OperationOutcome\"}".getBytes(StandardCharsets.UTF_8);
				status = 404;
			}
			exchange.sendResponseHeaders(status, body.length);
			exchange.getResponseBody().write(body);
			exchange.close();
		});
		ehr.start();
		return "http://127.0.0.1:" + ehr.getAddress().getPort() + "/fhir";
	}

	private static ObjectNode request(String prefetchJson, String fhirServer) throws IOException {
		ObjectNode r = (ObjectNode) MAPPER.readTree("{\"hook\":\"patient-view\",\"context\":{\"patientId\":\"p1\"},"
				+ "\"prefetch\":" + prefetchJson + "}");
		if (fhirServer != null) {
			r.put("fhirServer", fhirServer);
			r.putObject("fhirAuthorization").put("access_token", "secret").put("token_type", "Bearer");
		}
		return r;
	}

	private static String searchset(String... resources) {
		List<String> entries = new ArrayList<>();
		for (String r : resources) {
			entries.add("{\"resource\":" + r + "}");
		}
		return "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"entry\":[" + String.join(",", entries) + "]}";
	}

	private static String medRequest(String id, String reference) {
		return "{\"resourceType\":\"MedicationRequest\",\"id\":\"" + id + "\",\"status\":\"active\","
				+ "\"medicationReference\":{\"reference\":\"" + reference + "\"}}";
	}

	private static final String PATIENT_JSON = "{\"resourceType\":\"Patient\",\"id\":\"p1\"}";

	private static PrefetchResolver resolver(boolean includeMedication) {
		return new PrefetchResolver(MAPPER, Duration.ofSeconds(5), includeMedication);
	}

	private static final Map<String, String> TEMPLATES = Map.of("patient", PATIENT, "requests", REQUESTS);

	/** Verify that by default every medication template stays inside the subset: no _include, even one CR wrote. */
	@Test
	void defaultTemplatesHaveNoInclude() {
		for (String type : PrefetchResolver.MEDICATION_USES) {
			String t = type + "?patient=Patient/{{context.patientId}}&code=http://x|1";
			assertEquals(t, PrefetchResolver.normalizeTemplate(t, false));
			assertEquals(t, PrefetchResolver.normalizeTemplate(t + "&_include=" + type + ":medication", false));
		}
		assertEquals(PATIENT, PrefetchResolver.normalizeTemplate("Patient?_id={{context.patientId}}", false));
		assertEquals("Condition?patient=Patient/{{context.patientId}}",
				PrefetchResolver.normalizeTemplate("Condition?patient=Patient/{{context.patientId}}", false));
	}

	/** Verify that the setting puts _include of the referenced Medication back, once, on the medication searches only. */
	@Test
	void settingPutsIncludeBack() {
		for (String type : PrefetchResolver.MEDICATION_USES) {
			String t = type + "?patient=Patient/{{context.patientId}}";
			String want = t + "&_include=" + type + ":medication";
			assertEquals(want, PrefetchResolver.normalizeTemplate(t, true));
			assertEquals(want, PrefetchResolver.normalizeTemplate(want, true));
		}
		assertEquals(Map.of("patient", PATIENT, "requests", REQUESTS + "&_include=MedicationRequest:medication"),
				resolver(true).templates(TEMPLATES));
		assertEquals(TEMPLATES, resolver(false).templates(TEMPLATES));
		assertEquals("Observation?patient=Patient/{{context.patientId}}",
				PrefetchResolver.normalizeTemplate("Observation?patient=Patient/{{context.patientId}}", true));
	}

	/** Verify that prefetch only, a referenced Medication missing, is a 412 naming it and what references it. */
	@Test
	void prefetchOnlyMissingMedicationIs412NamingIt() throws IOException {
		ObjectNode req = request("{\"patient\":" + PATIENT_JSON + ",\"requests\":"
				+ searchset(medRequest("mr-1", "Medication/med-1"), medRequest("mr-2", "Medication/med-1")) + "}", null);
		CdsRequestError e = assertThrows(CdsRequestError.class, () -> resolver(false).resolve(req, TEMPLATES, false));
		assertEquals(412, e.status());
		assertTrue(e.getMessage().contains("Medication/med-1 referenced by MedicationRequest/mr-1"), e.getMessage());
		assertFalse(e.getMessage().contains("mr-2"), "each Medication is named once: " + e.getMessage());
	}

	/** Verify that a Medication in the prefetch (an _include entry) or contained needs nothing more. */
	@Test
	void prefetchedOrContainedMedicationIsEnough() throws IOException {
		String included = searchset(medRequest("mr-1", "Medication/med-1"), "{\"resourceType\":\"Medication\",\"id\":\"med-1\"}");
		ObjectNode req = request("{\"patient\":" + PATIENT_JSON + ",\"requests\":" + included + "}", null);
		resolver(false).resolve(req, TEMPLATES, false);
		assertFalse(req.get("prefetch").has(PrefetchResolver.REFERENCED_MEDICATIONS));
		String contained = searchset("{\"resourceType\":\"MedicationRequest\",\"id\":\"mr-1\",\"contained\":"
				+ "[{\"resourceType\":\"Medication\",\"id\":\"m\"}],\"medicationReference\":{\"reference\":\"#m\"}}");
		ObjectNode req2 = request("{\"patient\":" + PATIENT_JSON + ",\"requests\":" + contained + "}", null);
		resolver(false).resolve(req2, TEMPLATES, false);
		assertFalse(req2.get("prefetch").has(PrefetchResolver.REFERENCED_MEDICATIONS));
	}

	/** Verify that with fhirServer each referenced Medication is read once, by id, with the request's token. */
	@Test
	void fhirServerReadsEachReferencedMedicationOnce() throws IOException {
		String base = startEhr(List.of("med-1", "med-2"));
		ObjectNode req = request("{\"patient\":" + PATIENT_JSON + ",\"requests\":" + searchset(
				medRequest("mr-1", "Medication/med-1"), medRequest("mr-2", "Medication/med-1"),
				medRequest("mr-3", base + "/Medication/med-2"), medRequest("mr-4", "#contained")) + "}", base);
		resolver(false).resolve(req, TEMPLATES, false);
		assertEquals(List.of("Medication/med-1 Bearer secret", "Medication/med-2 Bearer secret"), seen);
		JsonNode read = req.get("prefetch").get(PrefetchResolver.REFERENCED_MEDICATIONS);
		assertEquals(2, read.get("entry").size());
		assertEquals("med-1", read.get("entry").get(0).get("resource").get("id").asText());
	}

	/** Verify that a referenced Medication the fhirServer does not have is a 412 naming it and its referrer. */
	@Test
	void fhirServerWithoutTheMedicationIs412() throws IOException {
		String base = startEhr(List.of());
		ObjectNode req = request("{\"patient\":" + PATIENT_JSON + ",\"requests\":"
				+ searchset(medRequest("mr-1", "Medication/gone")) + "}", base);
		CdsRequestError e = assertThrows(CdsRequestError.class, () -> resolver(false).resolve(req, TEMPLATES, false));
		assertEquals(412, e.status());
		assertTrue(e.getMessage().contains("Medication/gone is referenced by MedicationRequest/mr-1"), e.getMessage());
		assertFalse(e.getMessage().contains("secret"));
	}

	/** Verify that an absolute reference to another server is not read (the token is for fhirServer) but a 412. */
	@Test
	void otherServersMedicationIsNotRead() throws IOException {
		String base = startEhr(List.of("med-1"));
		ObjectNode req = request("{\"patient\":" + PATIENT_JSON + ",\"requests\":"
				+ searchset(medRequest("mr-1", "https://elsewhere.example/fhir/Medication/med-1")) + "}", base);
		CdsRequestError e = assertThrows(CdsRequestError.class, () -> resolver(false).resolve(req, TEMPLATES, false));
		assertEquals(412, e.status());
		assertTrue(e.getMessage().contains("referenced by MedicationRequest/mr-1"), e.getMessage());
		assertEquals(List.of(), seen);
	}

	/** Verify that with the data on this server (dataHere) nothing is read: storedData reads the Medications. */
	@Test
	void dataHereReadsNothing() throws IOException {
		String base = startEhr(List.of("med-1"));
		ObjectNode req = request("{}", base);
		resolver(false).resolve(req, TEMPLATES, true);
		assertEquals(List.of(), seen);
		assertFalse(req.get("prefetch").has(PrefetchResolver.REFERENCED_MEDICATIONS));
	}
}
