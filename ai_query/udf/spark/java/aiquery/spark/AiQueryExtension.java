package aiquery.spark;

import java.util.ArrayList;
import java.util.List;

import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.analysis.UnresolvedExtractValue;
import org.apache.spark.sql.catalyst.analysis.UnresolvedFunction$;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import org.apache.spark.sql.catalyst.expressions.Literal$;
import org.apache.spark.sql.catalyst.expressions.NamedArgumentExpression;
import org.apache.spark.sql.catalyst.expressions.PythonUDTFAnalyzeResult;
import org.apache.spark.sql.catalyst.expressions.UnresolvedPolymorphicPythonUDTF;
import org.apache.spark.sql.catalyst.plans.logical.Generate;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.classic.SparkSession;
import org.apache.spark.sql.types.Metadata;
import org.apache.spark.sql.types.StructField;

import scala.Option;
import scala.Tuple3;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * Databricks' result types for ai_query and the task functions, inside Spark's own analyzer.
 *
 * <p>A Python UDF's type is fixed, but ai_query's depends on its constant arguments
 * (returnType, responseFormat, failOnError, the endpoint's task). This extension gives each
 * typed function a builder that, when Spark resolves a call, asks the session's Python UDTF
 * {@value #PLAN_FUNCTION} (registered by {@code ai_query.udf.spark.register}, whose
 * {@code analyze} runs ai_query's own type rules on the call's constants) what the call returns,
 * then builds the typed expression over the hidden Python UDF that answers the rows:
 * {@code from_json(<udf call>, '<ddl>')}, the UDF call itself for text, or the vector UDF for a
 * plain embeddings call. A bad call fails here, at analysis, with ai_query's own message.
 *
 * <p>Installed either at session start ({@code spark.sql.extensions=aiquery.spark.AiQueryExtension})
 * or on a running session by {@link #register(SparkSession)}.
 */
public final class AiQueryExtension
    extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {

  /** The functions whose result type depends on their constant arguments. */
  public static final String[] FUNCTIONS = {
    "ai_query", "ai_analyze_sentiment", "ai_classify", "ai_extract",
  };
  /** The Python UDTF whose analyze step plans a call. */
  public static final String PLAN_FUNCTION = "__ai_query_plan";

  /** The Python UDF that answers the rows of {@code function} (as text). */
  public static String hiddenName(String function) {
    return "__" + function + "_text";
  }

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    for (String name : FUNCTIONS) {
      extensions.injectFunction(
          new Tuple3<>(FunctionIdentifier.apply(name), info(name), new TypedCall(name)));
    }
    return BoxedUnit.UNIT;
  }

  /** Registers the typed builders on a running session; returns how many. */
  public static int register(SparkSession session) {
    for (String name : FUNCTIONS) {
      session.sessionState().functionRegistry()
          .createOrReplaceTempFunction(name, new TypedCall(name), "scala_udf");
    }
    return FUNCTIONS.length;
  }

  private static ExpressionInfo info(String name) {
    return new ExpressionInfo(AiQueryExtension.class.getName(), name);
  }

  /** The builder of one function: plans the call in Python, then builds the typed expression. */
  static final class TypedCall
      extends AbstractFunction1<Seq<Expression>, Expression> implements java.io.Serializable {
    private final String name;

    TypedCall(String name) {
      this.name = name;
    }

    @Override
    public Expression apply(Seq<Expression> args) {
      Metadata plan = plan(args);
      if (plan.contains("error")) {
        throw analysisError(plan.getString("error"));
      }
      String mode = plan.getString("mode");
      Expression call = function(hiddenName(name), CollectionConverters.asJava(args));
      switch (mode) {
        case "text":
          return call;
        case "json":
          return function("from_json", List.of(call, lit(plan.getString("ddl"))));
        case "json_scalar": {
          // Spark's from_json reads nested types only: a scalar is the one element of an array.
          Expression text = function(
              "concat", List.of(lit("["), call, lit("]")));
          Expression array = function("from_json", List.of(text, lit(plan.getString("ddl"))));
          return new UnresolvedExtractValue(array, lit(0));
        }
        case "vector": {
          List<Expression> inputs = new ArrayList<>();
          for (long position : plan.getLongArray("args")) {
            inputs.add(unnamed(args.apply((int) position)));
          }
          return function(plan.getString("function"), inputs);
        }
        default:
          throw analysisError(name + ": unknown plan " + mode);
      }
    }

    /** What the session's plan UDTF says of this call (its one output column's metadata). */
    private Metadata plan(Seq<Expression> args) {
      SparkSession session = SparkSession.active();
      List<Expression> planArgs = new ArrayList<>();
      planArgs.add(lit(name));
      planArgs.addAll(CollectionConverters.asJava(args));
      Option<LogicalPlan> found = session.sessionState().catalog()
          .resolveBuiltinOrTempTableFunction(PLAN_FUNCTION, seq(planArgs));
      if (found.isEmpty()) {
        throw analysisError(name + " is not set up in this Spark session: call "
            + "ai_query.udf.spark.register(spark) first");
      }
      LogicalPlan plan = found.get();
      if (!(plan instanceof Generate)
          || !(((Generate) plan).generator() instanceof UnresolvedPolymorphicPythonUDTF)) {
        throw analysisError(PLAN_FUNCTION + " is not ai_query's planning UDTF");
      }
      UnresolvedPolymorphicPythonUDTF udtf =
          (UnresolvedPolymorphicPythonUDTF) ((Generate) plan).generator();
      PythonUDTFAnalyzeResult result =
          udtf.resolveElementMetadata().apply(udtf.func(), udtf.children());
      StructField[] fields = result.schema().fields();
      return fields[0].metadata();
    }
  }

  private static Expression unnamed(Expression arg) {
    return arg instanceof NamedArgumentExpression ? ((NamedArgumentExpression) arg).value() : arg;
  }

  private static Expression function(String name, List<Expression> args) {
    return UnresolvedFunction$.MODULE$.apply(name, seq(args), false);
  }

  private static Expression lit(Object value) {
    return Literal$.MODULE$.apply(value);
  }

  private static Seq<Expression> seq(List<Expression> items) {
    return CollectionConverters.asScala(items).toList();
  }

  /** Spark's AnalysisException with ai_query's message, thrown unchecked (Scala code throws
   * it from builders; Java's checked exceptions do not apply to the JVM). */
  private static RuntimeException analysisError(String message) {
    // An error condition whose text is the message alone.
    return AiQueryExtension.<RuntimeException>unchecked(new AnalysisException(
        "_LEGACY_ERROR_TEMP_1332",
        new scala.collection.immutable.Map.Map1<>("errorMessage", message)));
  }

  @SuppressWarnings("unchecked")
  private static <E extends Throwable> RuntimeException unchecked(Throwable error) throws E {
    throw (E) error;
  }
}
