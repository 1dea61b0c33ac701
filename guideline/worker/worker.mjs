// One long-lived CQL worker: compiles CQL to ELM (reference translator) and runs ELM
// (cql-execution + cql-exec-fhir). Protocol: one JSON request per stdin line, one JSON
// response per stdout line ({id, ok, result} or {id, ok:false, error}); logs go to stderr.
import { createRequire } from 'node:module';
import readline from 'node:readline';
import fs from 'node:fs';
import { makeFastDateTime } from './fastdatetime.mjs';

// Library logging (kotlin-logging prints an init line to stdout) must never corrupt the
// protocol stream: keep the real stdout writer for responses, send everything else to stderr.
const protocolWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);
console.log = console.error;
console.info = console.error;
console.warn = console.error;
console.debug = console.error;

const require = createRequire(import.meta.url);
const c2e = await import('@cqframework/cql/cql-to-elm');
const cqlModel = await import('@cqframework/cql/cql');
const kstd = await import('@cqframework/cql/kotlin-kotlin-stdlib');
const shared = await import('@cqframework/cql/shared');
const cql = require('cql-execution');
const cqlfhir = require('cql-exec-fhir');
const ucum = require('@lhncbc/ucum-lhc');
// Versions are recorded in every Library; some packages do not export package.json, so
// read it from the node_modules folder that resolution would use.
function pkgVersion(name) {
  for (const base of require.resolve.paths(name) || []) {
    const f = `${base}/${name}/package.json`;
    if (fs.existsSync(f)) return JSON.parse(fs.readFileSync(f, 'utf8')).version;
  }
  return null;
}

const ucumUtils = ucum.UcumLhcUtils.getInstance();
const FHIR_MODELINFO = fs.readFileSync(
  require.resolve('cql-exec-fhir/lib/modelInfos/fhir-modelinfo-4.0.1.xml'), 'utf8');

// ---------------------------------------------------------------- compile

// The JS build of the translator has no UCUM service; without one every unit literal fails.
function ucumService() {
  const { Pair } = kstd;
  const { BigDecimal } = shared;
  const convert = (value, from, to) => {
    const r = ucumUtils.convertUnitTo(from, Number(value), to);
    if (r.status !== 'succeeded') throw new Error(`cannot convert ${from} to ${to}`);
    return String(r.toVal);
  };
  const validate = (unit) => {
    const r = ucumUtils.validateUnitString(unit, true);
    return r.status === 'valid' ? null : (r.msg && r.msg.join('; ')) || `invalid UCUM unit '${unit}'`;
  };
  const arith = (op) => (a, b) => {
    const unit = `(${a.second})${op}(${b.second})`;
    const v1 = Number(a.first.toString());
    const v2 = Number(b.first.toString());
    return new Pair(BigDecimal.fromString(String(op === '.' ? v1 * v2 : v1 / v2)), unit);
  };
  return c2e.createUcumService(convert, validate, arith('.'), arith('/'));
}
const UCUM = ucumService();

const OPTION_NAMES = new Set([
  'EnableDateRangeOptimization', 'EnableAnnotations', 'EnableLocators', 'EnableResultTypes',
  'EnableDetailedErrors', 'DisableListTraversal', 'DisableListDemotion', 'DisableListPromotion',
  'EnableIntervalDemotion', 'EnableIntervalPromotion', 'DisableMethodInvocation',
  'RequireFromKeyword', 'DisableDefaultModelInfoLoad',
]);

function compilerOptions(spec) {
  const opts = new c2e.CqlCompilerOptions();
  const list = [];
  for (const name of spec.options || []) {
    if (!OPTION_NAMES.has(name)) throw new UsageError(`unknown translator option '${name}'`);
    list.push(c2e.CqlCompilerOptions.Options[name]);
  }
  opts.setOptions(list);
  const level = spec.signatureLevel || 'Overloads';
  const sig = c2e.LibraryBuilder.SignatureLevel[level];
  if (!sig) throw new UsageError(`unknown signatureLevel '${level}'`);
  opts.signatureLevel = sig;
  if (spec.compatibilityLevel) opts.compatibilityLevel = spec.compatibilityLevel;
  if (spec.analyzeDataRequirements) opts.analyzeDataRequirements = true;
  return opts;
}

class UsageError extends Error {}

// Library sources the translator may include, by name. The FHIRHelpers text is set once at
// start-up (from the registry artifact); project libraries come with each compile request.
const librarySources = new Map();
// A LibraryManager caches compiled includes. Reuse it while neither the options nor any
// project library text changed: recompiling FHIRHelpers costs ~0.3 s, a warm compile ~15 ms.
let managerKey = null;
let manager = null;

function libraryManagerFor(spec, sources) {
  const key = JSON.stringify([spec, [...sources.entries()].sort()]);
  if (manager && key === managerKey) return manager;
  librarySources.clear();
  for (const [k, v] of sources) librarySources.set(k, v);
  const modelManager = new c2e.ModelManager(new cqlModel.NamespaceManager());
  const loader = modelManager.modelInfoLoader;
  loader.registerModelInfoProvider(new cqlModel.SystemModelInfoProvider(), true);
  loader.registerModelInfoProvider(c2e.createModelInfoProvider((id, system, version) => {
    if (id === 'FHIR' && (version == null || version === '4.0.1')) return c2e.stringAsSource(FHIR_MODELINFO);
    return null;
  }));
  const lm = new c2e.LibraryManager(modelManager, compilerOptions(spec), null, UCUM);
  lm.librarySourceLoader.registerProvider(c2e.createLibrarySourceProvider((id, system, version) => {
    const text = librarySources.get(id);
    return text == null ? null : c2e.stringAsSource(text);
  }));
  manager = lm;
  managerKey = key;
  return lm;
}

function arr(ktList) {
  return ktList ? Array.from(ktList.asJsReadonlyArrayView()) : [];
}

// Positions: the locator class (TrackBack) is not exported and its fields are name-mangled,
// so parse its text: "TrackBack{library='…', startLine=2, startChar=11, endLine=2, endChar=17}".
function locatorOf(ex) {
  const loc = ex.locator;
  if (!loc) return null;
  const m = /startLine=(\d+), startChar=(\d+), endLine=(\d+), endChar=(\d+)/.exec(String(loc));
  if (!m) return null;
  return { startLine: Number(m[1]), startChar: Number(m[2]), endLine: Number(m[3]), endChar: Number(m[4]) };
}

function libraryIdOf(ex) {
  const loc = ex.locator;
  const lib = loc && loc.library;
  if (lib && lib.id) return { id: lib.id, version: lib.version || null };
  return null;
}

function messagesOf(translator, targetName) {
  const out = [];
  const seen = new Set();
  for (const ex of arr(translator.exceptions)) {
    const severity = ex.severity ? ex.severity.name : 'Error';
    const lib = libraryIdOf(ex);
    const item = {
      severity: severity.toLowerCase(),
      kind: String(ex.name || 'CqlCompilerException'),
      message: String(ex.message),
      library: lib ? lib.id : targetName,
      libraryVersion: lib ? lib.version : null,
      ...(locatorOf(ex) || {}),
    };
    const k = JSON.stringify(item);
    if (!seen.has(k)) { seen.add(k); out.push(item); }
  }
  return out;
}

// The ELM annotations hold the reliable positions and library ids of errors; merge them in.
function elmErrors(elm) {
  const anns = (elm.library && elm.library.annotation) || [];
  return anns.filter((a) => a.type === 'CqlToElmError').map((a) => ({
    severity: String(a.errorSeverity || 'error').toLowerCase(),
    kind: a.errorType || 'semantic',
    message: a.message,
    library: a.libraryId || null,
    libraryVersion: a.libraryVersion || null,
    startLine: a.startLine, startChar: a.startChar, endLine: a.endLine, endChar: a.endChar,
  }));
}

function doCompile(req) {
  const spec = req.options || {};
  const sources = new Map(Object.entries(req.libraries || {}));
  if (!sources.has(req.target)) throw new UsageError(`target library '${req.target}' not in libraries`);
  const lm = libraryManagerFor(spec, sources);
  const translator = c2e.CqlTranslator.fromText(sources.get(req.target), lm);
  const messages = messagesOf(translator, req.target);
  let elm = null;
  try { elm = JSON.parse(translator.toJson()); } catch (e) { elm = null; }
  const annotated = elm ? elmErrors(elm) : [];
  // Prefer annotation positions (they name the library the problem is in).
  for (const m of messages) {
    const a = annotated.find((x) => x.message === m.message);
    if (a) {
      m.library = a.library || m.library;
      m.libraryVersion = a.libraryVersion || m.libraryVersion;
      if (a.startLine) Object.assign(m, { startLine: a.startLine, startChar: a.startChar, endLine: a.endLine, endChar: a.endChar });
    }
  }
  // ANTLR reports syntax errors with a 0-based column (semantic errors are 1-based): align them
  // so every position we print is 1-based, as editors count.
  for (const m of messages) {
    if (/syntax/i.test(m.kind) && m.startChar != null) {
      m.startChar += 1;
      if (m.endChar != null) m.endChar += 1;
    }
  }
  const hasErrors = messages.some((m) => m.severity === 'error');
  // The translator does not drop the manager's cache after a failed compile; start fresh next
  // time so a fixed library is not shadowed by its broken earlier self.
  if (hasErrors) { manager = null; managerKey = null; }
  return { elm: hasErrors ? null : elm, messages };
}

// ---------------------------------------------------------------- execute

const packages = new Map(); // key -> {libs: {name: elm}, repo, codeService, built: Map(name -> cql.Library)}
let patientSource = null; // reused: PatientSource.FHIRv401() re-parses the modelinfo (~80 ms)

function doLoad(req) {
  const libs = req.libraries || {};
  const repo = new cql.Repository(libs);
  const vs = {};
  for (const [url, byVersion] of Object.entries(req.valueSets || {})) vs[url] = byVersion;
  packages.set(req.key, { libs, repo, codeService: new cql.CodeService(vs), built: new Map() });
  return { key: req.key, libraries: Object.keys(libs).length, valueSets: Object.keys(vs).length };
}

// A cql.Library holds no per-patient state, so build each once: building one from ELM also
// rebuilds every include (FHIRHelpers alone is ~900 KB of ELM), which cost ~15 ms per call.
function libraryFor(pkg, key, name) {
  let lib = pkg.built.get(name);
  if (!lib) {
    const elm = pkg.libs[name];
    if (!elm) throw new UsageError(`library '${name}' not loaded in package '${key}'`);
    lib = new cql.Library(elm, pkg.repo);
    pkg.built.set(name, lib);
  }
  return lib;
}

function toEngineValue(v) {
  if (v === null || v === undefined) return null;
  if (Array.isArray(v)) return v.map(toEngineValue);
  if (typeof v !== 'object') return v;
  switch (v.type) {
    case 'Quantity': return new cql.Quantity(v.value, v.unit);
    case 'DateTime': return cql.DateTime.parse(v.value);
    case 'Date': return cql.Date.parse(v.value);
    case 'Code': return new cql.Code(v.code, v.system, v.version, v.display);
    case 'Interval': return new cql.Interval(toEngineValue(v.low), toEngineValue(v.high), v.lowClosed !== false, v.highClosed !== false);
    default: throw new UsageError(`unsupported parameter value type '${v.type}'`);
  }
}

function fromEngineValue(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'boolean' || typeof v === 'string') return v;
  if (typeof v === 'number') return v;
  if (Array.isArray(v)) return v.map(fromEngineValue);
  if (v.isDateTime) return { type: 'DateTime', value: v.toString() };
  if (v.isDate) return { type: 'Date', value: v.toString() };
  if (v.isQuantity || v instanceof cql.Quantity) return { type: 'Quantity', value: v.value, unit: v.unit };
  if (v instanceof cql.Code) return { type: 'Code', system: v.system ?? null, code: v.code, display: v.display ?? null, version: v.version ?? null };
  if (v instanceof cql.Concept) return { type: 'Concept', codes: (v.codes || []).map(fromEngineValue), display: v.display ?? null };
  if (v instanceof cql.Interval) return { type: 'Interval', low: fromEngineValue(v.low), high: fromEngineValue(v.high), lowClosed: v.lowClosed, highClosed: v.highClosed };
  if (v.isUncertainty || (v.constructor && v.constructor.name === 'Uncertainty')) return { type: 'Uncertainty', low: fromEngineValue(v.low), high: fromEngineValue(v.high) };
  if (v._json !== undefined && typeof v.getTypeInfo === 'function') {
    const ti = v.getTypeInfo();
    return { type: 'FHIR', fhirType: ti ? ti.name : null, json: v._json };
  }
  if (v.constructor === Object) {
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = fromEngineValue(x);
    return { type: 'Tuple', elements: out };
  }
  return { type: 'Unknown', value: String(v) };
}

function packageFor(key) {
  const pkg = packages.get(key);
  if (!pkg) throw new UsageError(`no package loaded under key '${key}'`);
  return pkg;
}

function executionTime(req) {
  if (!req.executionDateTime) throw new UsageError('executionDateTime is required');
  const when = cql.DateTime.parse(req.executionDateTime);
  if (!when) throw new UsageError(`executionDateTime '${req.executionDateTime}' is not a CQL DateTime`);
  return when;
}

function engineParameters(req) {
  const params = {};
  for (const [k, v] of Object.entries(req.parameters || {})) params[k] = toEngineValue(v);
  return params;
}

async function doExecute(req) {
  const pkg = packageFor(req.key);
  const lib = libraryFor(pkg, req.key, req.library);
  const when = executionTime(req);
  const params = engineParameters(req);
  const executor = new cql.Executor(lib, pkg.codeService, params);
  if (!patientSource) patientSource = cqlfhir.PatientSource.FHIRv401();
  patientSource.reset();
  patientSource.loadBundles(req.bundles || []);
  const results = await executor.exec(patientSource, when);
  const out = {};
  const wanted = req.expressions ? new Set(req.expressions) : null;
  for (const [pid, defs] of Object.entries(results.patientResults)) {
    const row = {};
    for (const [name, value] of Object.entries(defs)) {
      if (wanted && !wanted.has(name)) continue;
      row[name] = fromEngineValue(value);
    }
    out[pid] = row;
  }
  return { patients: out };
}

// ---------------------------------------------------------------- population

// Per patient, the records of each type are wrapped once (cql-exec-fhir builds a new wrapper
// for every record at every retrieve, ~25 % of the time) and a retrieve with codes only gets
// the records whose coding can match. The engine still applies its own code filter to what we
// return, so this prefilter only has to be permissive: whenever unsure, it keeps the record.
class IndexedPatient {
  constructor(base) {
    this.base = base;
    this.byType = new Map();
  }

  getId() { return this.base.getId(); }

  findRecords(profile, details) {
    const type = details ? details.datatype : profile;
    let all = this.byType.get(type);
    if (!all) {
      all = this.base.findRecords(profile, details);
      this.byType.set(type, all);
    }
    const wanted = details && details.codeProperty ? codeKeys(details.codes) : null;
    if (!wanted) return all.slice();
    return all.filter((r) => mayMatch(r._json, details.codeProperty, wanted));
  }
}

// "system|code" of each code, or null (no prefilter) if any code lacks a system or is a string.
function codeKeys(codes) {
  if (!Array.isArray(codes)) return null;
  const keys = new Set();
  for (const c of codes) {
    if (!c || typeof c.code !== 'string' || typeof c.system !== 'string') return null;
    keys.add(`${c.system}|${c.code}`);
  }
  return keys;
}

function mayMatch(json, property, keys) {
  if (!json) return true;
  const value = json[property];
  if (value === undefined) {
    // A choice element (medication -> medicationCodeableConcept, ...): let the engine decide.
    return Object.keys(json).some((k) => k.startsWith(property));
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !Array.isArray(value.coding)) return true;
  return value.coding.some((c) => !c || typeof c.system !== 'string' || keys.has(`${c.system}|${c.code}`));
}

// Queries are distinct by default in cql-execution, and its distinct key of a FHIR record walks
// every element of the record (~25 % of the time). A record's key contains its resourceType and
// id, so records whose (resourceType, id) pairs all differ have pairwise different keys and the
// distinct list is the list itself, in the same order. Any other list takes the full path.
// cql-execution calls toDistinctList through its module's exports, so this replaces it everywhere.
const listModule = require('cql-execution/lib/elm/list');
const plainDistinct = listModule.toDistinctList;
let fastDistinct = false; // true while a (non-plain) batch runs
listModule.toDistinctList = (list) => {
  if (!fastDistinct || !Array.isArray(list) || list.length < 2) return plainDistinct(list);
  const seen = new Set();
  for (const r of list) {
    const json = r && typeof r === 'object' ? r._json : undefined;
    if (!json || typeof json.resourceType !== 'string' || typeof json.id !== 'string' || !json.id) {
      return plainDistinct(list);
    }
    const k = `${json.resourceType}/${json.id}`;
    if (seen.has(k)) return plainDistinct(list);
    seen.add(k);
  }
  return list.slice();
};

// Reading an element of a record builds new wrapper objects each time (cql-exec-fhir defines a
// property per element of the type on every wrapper); CQL reads the same elements of the same
// records many times (each lab define re-reads status, effective and value). Records do not
// change, so while a batch runs, remember each element read per wrapper.
// cql-exec-fhir exports neither class: reach FHIRObject through a probe Patient (Patient extends it).
patientSource = cqlfhir.PatientSource.FHIRv401();
patientSource.loadBundles([{ resourceType: 'Bundle', entry: [{ resource: { resourceType: 'Patient', id: 'probe' } }] }]);
const fhirObjectProto = Object.getPrototypeOf(Object.getPrototypeOf(patientSource.currentPatient()));
patientSource.reset();
if (typeof fhirObjectProto.get !== 'function' || fhirObjectProto === Object.prototype) {
  throw new Error('cql-exec-fhir changed: cannot find FHIRObject.prototype.get');
}
// What `plain.call(owner, key)` returned the first time, remembered in memo (a WeakMap of
// owner -> Map of key -> value, undefined results included).
function remembered(memo, owner, key, plain) {
  let values = memo.get(owner);
  if (values === undefined) {
    values = new Map();
    memo.set(owner, values);
  }
  if (values.has(key)) return values.get(key);
  const value = plain.call(owner, key);
  values.set(key, value);
  return value;
}

// cql-exec-fhir wraps a contained resource by the element's declared type (Resource), so `C is
// FHIR.Medication` is false and its elements cannot be read; the Java engine types it by its
// resourceType. Re-wrap such a value by its resourceType (project safety rule 12 reads contained
// Medications), so both engines agree.
const FHIRObject = fhirObjectProto.constructor;
function typedResource(value) {
  if (!(value instanceof FHIRObject) || value._typeInfo == null || value._typeInfo.name !== 'Resource') return value;
  const rt = value._json && value._json.resourceType;
  const klass = typeof rt === 'string' ? value._modelInfo.findClass(rt) : null;
  return klass == null ? value : new FHIRObject(value._json, klass, value._modelInfo);
}
const untypedGet = fhirObjectProto.get;
function plainGet(field) {
  const value = untypedGet.call(this, field);
  return Array.isArray(value) ? value.map(typedResource) : typedResource(value);
}
let getMemo = null; // WeakMap(wrapper -> Map(field -> value)) during a batch, null otherwise
fhirObjectProto.get = function get(field) {
  return getMemo === null ? plainGet.call(this, field) : remembered(getMemo, this, field, plainGet);
};

// A retrieve with codes tests each record against every code of the list (an expanded value
// set has several) and converts the record's code to CQL Codes again for each one. The record's
// code does not change: convert it once per test. Same result, same order of checks.
const retrieveProto = require('cql-execution/lib/elm/external').Retrieve.prototype;
const plainMatches = retrieveProto.recordMatchesCodesOrVS;
if (typeof plainMatches !== 'function') throw new Error('cql-execution changed: no Retrieve.recordMatchesCodesOrVS');
retrieveProto.recordMatchesCodesOrVS = function recordMatchesCodesOrVS(record, codes) {
  if (getMemo === null || !Array.isArray(codes)) return plainMatches.call(this, record, codes);
  const recordCode = record.getCode(this.codeProperty);
  return codes.some((c) => c.hasMatch(recordCode));
};

// Reading a FHIR dateTime builds a CQL DateTime with cql.DateTime.parse, which validates the
// text with up to several luxon format parses (~7 % of a batch). For the one shape FHIR data
// nearly always has (date, time to the second, optional milliseconds, Z or +hh:mm) with fields
// in range, the result is built directly, exactly as parse builds it; anything else (partial
// dates, other precisions, out-of-range fields) goes to the original. fastDateTime is checked
// against the original on a corpus by tests/test_worker_fastpaths.py.
const plainParse = cql.DateTime.parse;
const fastDateTime = makeFastDateTime(cql.DateTime);
cql.DateTime.parse = function parse(string) {
  if (getMemo !== null) {
    const fast = fastDateTime(string);
    if (fast !== undefined) return fast;
  }
  return plainParse.call(this, string);
};

// The model info is immutable, but findClass resolves a name through up to three maps and a
// string rewrite, and every element wrapper calls it once per base type (~3 %): remember it.
const modelInfoProto = Object.getPrototypeOf(patientSource._modelInfo);
const plainFindClass = modelInfoProto.findClass;
if (typeof plainFindClass !== 'function') throw new Error('cql-exec-fhir changed: no ModelInfo.findClass');
const classMemo = new WeakMap(); // model info -> Map(name -> class info or undefined)
modelInfoProto.findClass = function findClass(klass) {
  return remembered(classMemo, this, klass, plainFindClass);
};

// Every library evaluated for one patient shares one context per included library, so the
// defines of a common library (GLCommon) run once per patient, not once per including library.
// CQL defines an included library's results independently of who includes it; parameters are
// the same object for all.
class SharedPatientContext extends cql.PatientContext {
  constructor(library, patient, codeService, parameters, executionDateTime, shared) {
    super(library, patient, codeService, parameters, executionDateTime);
    this.shared = shared;
  }

  getLibraryContext(alias) {
    let ctx = this.library_context[alias];
    if (ctx == null) {
      const lib = this.get(alias);
      const id = lib && lib.source && lib.source.library && lib.source.library.identifier;
      const key = id ? `${id.id}|${id.version || ''}` : null;
      ctx = key ? this.shared.get(key) : null;
      if (!ctx) {
        ctx = new SharedPatientContext(lib, this.patient, this.codeService, this.parameters, this.executionDateTime, this.shared);
        if (key) this.shared.set(key, ctx);
      }
      this.library_context[alias] = ctx;
    }
    return ctx;
  }
}

// Many patients (one Bundle each), several libraries, one request. Each patient's result or
// error is its own entry, in request order, so one bad record never fails its neighbours and
// duplicate Patient ids across records cannot collide. `plain: true` evaluates exactly as
// `execute` does (no shared contexts, no record index): the reference the tests compare with.
async function doBatch(req) {
  const pkg = packageFor(req.key);
  const libs = (req.libraries || []).map((name) => [name, libraryFor(pkg, req.key, name)]);
  const wanted = req.expressions || {};
  const when = executionTime(req);
  const params = engineParameters(req);
  const plain = req.plain === true;
  if (!patientSource) patientSource = cqlfhir.PatientSource.FHIRv401();
  const results = [];
  fastDistinct = !plain;
  getMemo = plain ? null : new WeakMap();
  try {
    await batchPatients(req.bundles || [], libs, wanted, pkg, params, when, plain, results);
  } finally {
    fastDistinct = false;
    getMemo = null;
    patientSource.reset();
  }
  return { results };
}

async function batchPatients(bundles, libs, wanted, pkg, params, when, plain, results) {
  for (const bundle of bundles) {
    try {
      patientSource.reset();
      patientSource.loadBundles([bundle]);
      const base = patientSource.currentPatient();
      if (!base) throw new Error('the record holds no Patient');
      const patient = plain ? base : new IndexedPatient(base);
      const shared = new Map();
      const row = {};
      for (const [name, lib] of libs) {
        const ctx = plain
          ? new cql.PatientContext(lib, patient, pkg.codeService, params, when)
          : new SharedPatientContext(lib, patient, pkg.codeService, params, when, shared);
        const names = wanted[name] || Object.keys(lib.expressions).filter((k) => lib.expressions[k].context === 'Patient');
        const values = {};
        for (const define of names) {
          const expr = lib.expressions[define];
          if (expr) values[define] = fromEngineValue(await expr.execute(ctx));
        }
        row[name] = values;
      }
      results.push({ ok: true, libraries: row });
    } catch (e) {
      results.push({ ok: false, error: String(e && e.message ? e.message : e) });
    }
  }
}

// ---------------------------------------------------------------- loop

const handlers = {
  ping: () => ({
    translator: pkgVersion('@cqframework/cql'), engine: pkgVersion('cql-execution'),
    fhirDataSource: pkgVersion('cql-exec-fhir'),
    node: process.version, tz: process.env.TZ || null,
  }),
  // Memory for benchmarks, in KiB (maxRSS is the peak over the process's life).
  stats: () => ({ rssKiB: Math.round(process.memoryUsage().rss / 1024), maxRssKiB: process.resourceUsage().maxRSS }),
  compile: doCompile,
  load: doLoad,
  execute: doExecute,
  batch: doBatch,
};

function respond(obj) {
  protocolWrite(JSON.stringify(obj) + '\n');
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
// Requests are handled one at a time, in order, so responses never interleave.
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let req;
    try { req = JSON.parse(line); } catch (e) {
      respond({ id: null, ok: false, error: { type: 'protocol', message: `request is not JSON: ${e.message}` } });
      return;
    }
    const h = handlers[req.op];
    if (!h) { respond({ id: req.id, ok: false, error: { type: 'usage', message: `unknown op '${req.op}'` } }); return; }
    try {
      respond({ id: req.id, ok: true, result: await h(req) });
    } catch (e) {
      const type = e instanceof UsageError ? 'usage' : 'engine';
      respond({ id: req.id, ok: false, error: { type, message: String(e && e.message ? e.message : e) } });
    }
  });
});
rl.on('close', () => { chain.then(() => process.exit(0)); });
respond({ id: 0, ok: true, result: { ready: true } });
