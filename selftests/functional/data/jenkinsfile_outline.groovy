// Parse a Jenkinsfile with the Groovy compiler and print its outline.
//
// Compiles only to the CONVERSION phase: syntax checked and the AST built,
// but no class resolution, because declarative pipeline's steps (pipeline,
// stage, sh, junit...) exist only inside Jenkins. Each method call is printed
// on its own line, indented by how deep its closures nest, with its
// arguments: constants and variables as they are, named arguments as
// key=value, GStrings as their source text, separated by tabs; newlines in
// them are printed as \n so that one call stays one line. An assignment
// (as in an environment block) prints as "=<TAB>name<TAB>value". The
// functions the file defines follow the pipeline, as "def<TAB>name".
import org.codehaus.groovy.ast.CodeVisitorSupport
import org.codehaus.groovy.ast.expr.*
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.Phases

class Outline extends CodeVisitorSupport {
    int depth = 0

    static String show(Expression e) {
        return raw(e).replace('\n', '\\n')
    }

    static String raw(Expression e) {
        if (e instanceof ConstantExpression) return String.valueOf(e.value)
        if (e instanceof VariableExpression) return e.name
        if (e instanceof GStringExpression) return e.text
        if (e instanceof ListExpression) return e.expressions.collect { show(it) }.join(',')
        return e.text
    }

    void visitMethodCallExpression(MethodCallExpression call) {
        def shown = []
        def args = call.arguments
        def items = (args instanceof TupleExpression) ? args.expressions : [args]
        items.each { arg ->
            if (arg instanceof MapExpression) {
                arg.mapEntryExpressions.each { shown << show(it.keyExpression) + '=' + show(it.valueExpression) }
            } else if (!(arg instanceof ClosureExpression)) {
                shown << show(arg)
            }
        }
        println(('  ' * depth) + ([call.methodAsString] + shown).join('\t'))
        depth++
        super.visitMethodCallExpression(call)
        depth--
    }

    void visitBinaryExpression(BinaryExpression e) {
        if (e.operation.text == '=') {
            println(('  ' * depth) + ['=', show(e.leftExpression), show(e.rightExpression)].join('\t'))
        }
        super.visitBinaryExpression(e)
    }
}

def unit = new CompilationUnit()
unit.addSource(new File(args[0]))
unit.compile(Phases.CONVERSION)
def outline = new Outline()
unit.AST.modules.each { it.statementBlock.visit(outline) }
// then the functions the script defines, each as "def<TAB>name" with its body nested under it
unit.AST.modules.each { module ->
    module.methods.each { method ->
        println(['def', method.name].join('\t'))
        outline.depth = 1
        method.code?.visit(outline)
        outline.depth = 0
    }
}
