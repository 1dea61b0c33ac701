// Reads a FHIR NPM package with HAPI's own reader (org.hl7.fhir.utilities.npm.NpmPackage, from the
// server's classpath) and prints what it sees, one "key=value" a line, for tests/unit/content/test_package_reader.py.
import java.io.FileInputStream;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import org.hl7.fhir.utilities.npm.NpmPackage;

public class NpmIndex {
  public static void main(String[] args) throws Exception {
    NpmPackage npm;
    try (InputStream in = new FileInputStream(args[0])) {
      npm = NpmPackage.fromPackage(in);
    }
    System.out.println("name=" + npm.name());
    System.out.println("version=" + npm.version());
    System.out.println("fhirVersion=" + npm.fhirVersion());
    System.out.println("canonical=" + npm.canonical());
    for (String dep : npm.dependencies()) System.out.println("dependency=" + dep);
    for (String type : new String[] {"ImplementationGuide", "PlanDefinition", "ActivityDefinition", "Library", "ValueSet"}) {
      System.out.println("files." + type + "=" + String.join(",", new java.util.TreeSet<>(npm.listResources(type))));
    }
    for (String file : npm.listResources("ImplementationGuide")) {
      try (InputStream in = npm.load("package", file)) {
        System.out.println("ig=" + new String(in.readAllBytes(), StandardCharsets.UTF_8).replace("\n", " "));
      }
    }
    try (InputStream in = npm.loadByCanonical(args[1])) {
      System.out.println("byCanonical=" + (in != null));
    }
  }
}
