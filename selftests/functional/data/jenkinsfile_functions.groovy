// Call functions of a Jenkinsfile outside Jenkins and print what they return, as JSON.
//
// Usage: groovy jenkinsfile_functions.groovy JENKINSFILE CALLS_JSON
// CALLS_JSON is a list of [name, [arguments...]]. The Jenkinsfile is compiled
// as the script it is, but its body (the pipeline block, which needs Jenkins)
// never runs: only the named functions, which must use no Jenkins step. Each
// call prints one object: {"value": ...} or {"error": "<exception message>"}.
import groovy.json.JsonOutput
import groovy.json.JsonSlurper

def jenkinsfile = new GroovyShell().parse(new File(args[0]))
def calls = new JsonSlurper().parseText(new File(args[1]).text)
def answers = calls.collect { call ->
    try {
        [value: jenkinsfile.invokeMethod(call[0], call[1] as Object[])]
    } catch (IllegalArgumentException err) {
        [error: err.message]
    }
}
println(JsonOutput.toJson(answers))
