package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import org.junit.jupiter.api.Test;
import org.springframework.mock.web.MockHttpServletRequest;

/** Bulk Data $export as the server sets it up: fresh jobs, fast-tracked, and a kick-off counted as a write. */
class BulkExportConfigTest {
	private static MockHttpServletRequest request(String method, String uri) {
		MockHttpServletRequest req = new MockHttpServletRequest(method, uri);
		req.setContextPath("");
		return req;
	}

	/** Verify that an identical export starts a new job (never an earlier job's files) and is fast-tracked. */
	@Test
	void storageSettings() {
		JpaStorageSettings s = new JpaStorageSettings();
		JpaServerConfig.bulkExport(s);
		assertFalse(s.getEnableBulkExportJobReuse());
		assertTrue(s.isJobFastTrackingEnabled());
	}

	/** Verify that every $export kick-off (GET or POST, system, Group or Patient) needs the write token. */
	@Test
	void kickOffIsAWrite() {
		assertTrue(BearerTokenFilter.isWrite(request("GET", "/fhir/$export")));
		assertTrue(BearerTokenFilter.isWrite(request("GET", "/fhir/Group/g1/$export")));
		assertTrue(BearerTokenFilter.isWrite(request("GET", "/fhir/Patient/$export")));
		assertTrue(BearerTokenFilter.isWrite(request("POST", "/fhir/Patient/$export")));
	}

	/** Verify that polling the status and downloading the files stay reads (the EHR mode still wants a token). */
	@Test
	void pollingAndDownloadsAreReads() {
		assertFalse(BearerTokenFilter.isWrite(request("GET", "/fhir/$export-poll-status")));
		assertFalse(BearerTokenFilter.isWrite(request("GET", "/fhir/Binary/abc")));
		assertTrue(BearerTokenFilter.isWrite(request("DELETE", "/fhir/$export-poll-status")));
	}
}
