package org.example.gl.server;

import ca.uhn.fhir.jpa.packages.IPackageInstallerSvc;
import ca.uhn.fhir.jpa.packages.PackageInstallOutcomeJson;
import ca.uhn.fhir.jpa.packages.PackageInstallationSpec;
import com.fasterxml.jackson.databind.ObjectMapper;
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.hl7.fhir.utilities.npm.NpmPackage;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code POST /packages} with a FHIR NPM package (.tgz) as the body installs it the way HAPI installs
 * implementation guides: its own package installer ({@link IPackageInstallerSvc}, STORE_AND_INSTALL), which
 * stores the package in the server's package cache and creates or updates each knowledge resource by its
 * canonical url. Dependencies are not fetched: this server never reaches a package registry (the CPG, CRMI and
 * extensions packages the manifest names only matter to profile validation). Answers JSON
 * {@code {"package", "installed": {type: count}, "messages": [...]}}; a package HAPI cannot read is a 400.
 */
public class PackageInstallServlet extends HttpServlet {
	private static final Logger ourLog = LoggerFactory.getLogger(PackageInstallServlet.class);
	// The knowledge resource types a guideline package carries (HAPI's default list is conformance resources).
	private static final List<String> TYPES =
			List.of("Library", "PlanDefinition", "ActivityDefinition", "Measure", "ValueSet", "CodeSystem", "Questionnaire");

	private final transient IPackageInstallerSvc installer;
	private final transient ObjectMapper mapper = new ObjectMapper();

	public PackageInstallServlet(IPackageInstallerSvc installer) {
		this.installer = installer;
	}

	@Override
	protected void doPost(HttpServletRequest req, HttpServletResponse resp) throws IOException {
		byte[] tgz = req.getInputStream().readAllBytes();
		NpmPackage npm;
		try {
			npm = NpmPackage.fromPackage(new ByteArrayInputStream(tgz));
		} catch (IOException | RuntimeException e) {
			write(resp, 400, Map.of("error", "not a FHIR NPM package: " + e.getMessage()));
			return;
		}
		PackageInstallationSpec spec = new PackageInstallationSpec()
				.setName(npm.name())
				.setVersion(npm.version())
				.setPackageContents(tgz)
				.setInstallMode(PackageInstallationSpec.InstallModeEnum.STORE_AND_INSTALL)
				.setFetchDependencies(false);
		spec.setInstallResourceTypes(TYPES);
		spec.setReloadExisting(true);
		try {
			PackageInstallOutcomeJson outcome = installer.install(spec);
			Map<String, Object> body = new LinkedHashMap<>();
			body.put("package", npm.name() + "#" + npm.version());
			body.put("installed", outcome.getResourcesInstalled());
			body.put("messages", outcome.getMessage());
			write(resp, 200, body);
		} catch (RuntimeException e) {
			ourLog.warn("package install failed", e);
			write(resp, 422, Map.of("error", "install failed: " + e.getMessage()));
		}
	}

	private void write(HttpServletResponse resp, int status, Object body) throws IOException {
		resp.setStatus(status);
		resp.setContentType("application/json");
		resp.setCharacterEncoding("UTF-8");
		mapper.writeValue(resp.getOutputStream(), body);
	}
}
